//! The host-guest channel: a ring of framed, checksummed messages in a
//! reserved range of guest physical memory.
//!
//! The guest writes (through `/dev/mem`), the host reads (through its mapping
//! of guest RAM) while the guest runs and after it ends. This module is the
//! one definition of the wire format: the guest's `Writer` and the host's
//! [`Reader`] share it, each over its own [`ChannelMem`].
//!
//! Layout (all integers little-endian):
//! ```text
//! 0x000  magic   u64  "KTSTRCH1"
//! 0x008  size    u64  total bytes of the region
//! 0x010  head    u64  bytes ever written to the data ring (guest)
//! 0x018  tail    u64  bytes ever consumed from it (host)
//! 0x020  dropped u64  frames the guest dropped because the ring was full
//! 0x028  (reserved, zero)
//! 0x030  acked   u64  host -> guest: the highest request `seq` the host answered
//! 0x038  go      u64  host -> restored agent: the hand-off below is written
//! 0x040  time    u64  host's CLOCK_REALTIME at the hand-off, ns since the epoch
//! 0x048  random  64 bytes from the host's RNG, to reseed the guest's
//! 0x1000 data    ring of frames: len u32, kind u32, crc32 u32, pad u32, payload, padding to 8
//! ```

use serde::{Deserialize, Serialize};

use crate::assert::AssertResult;

/// Guest physical address of the channel region (above the kernel image at
/// 16 MiB, far below where loaders put the initramfs, at the top of RAM).
pub const CHANNEL_GPA: u64 = 0x0600_0000;
/// Size of the channel region.
pub const CHANNEL_SIZE: u64 = 4 << 20;
/// The least guest RAM that leaves the channel region inside node 0.
pub const MIN_GUEST_MIB: u64 = 128;

const MAGIC: u64 = u64::from_le_bytes(*b"KTSTRCH1");
const OFF_MAGIC: u64 = 0x00;
const OFF_SIZE: u64 = 0x08;
const OFF_HEAD: u64 = 0x10;
const OFF_TAIL: u64 = 0x18;
const OFF_DROPPED: u64 = 0x20;
/// Reserved: once host -> guest signal bits, which no guest code read (the
/// host killed the VM right after raising them). Kept zero so the layout
/// stays that of `KTSTRCH1`.
const OFF_SIGNALS: u64 = 0x28;
const OFF_ACKED: u64 = 0x30;
const OFF_GO: u64 = 0x38;
const OFF_TIME: u64 = 0x40;
const OFF_RANDOM: u64 = 0x48;
/// The `go` word's value once the hand-off is written.
const GO: u64 = u64::from_le_bytes(*b"KTSTRGO1");
const DATA: u64 = 0x1000;
const FRAME_HEADER: u64 = 16;
/// Largest payload of one frame.
pub(crate) const MAX_PAYLOAD: u64 = 1 << 20;

/// Byte access to the channel region, offsets relative to its start.
///
/// `load_u64`/`store_u64` are the synchronization points: implementations
/// make a store visible only after every earlier `write` (release) and a
/// load happen before every later `read` (acquire).
pub trait ChannelMem {
    /// Copies bytes out of the region.
    fn read(&self, off: u64, buf: &mut [u8]);
    /// Copies bytes into the region.
    fn write(&self, off: u64, buf: &[u8]);
    /// Reads a u64 with acquire ordering.
    fn load_u64(&self, off: u64) -> u64;
    /// Writes a u64 with release ordering.
    fn store_u64(&self, off: u64, v: u64);
}

/// What crosses the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// The guest's init is up; `uptime_ms` is the guest kernel's uptime.
    Hello {
        /// Guest uptime at init start, in milliseconds.
        uptime_ms: u64,
        /// The test the guest will run.
        test: String,
        /// The guest's `CLOCK_REALTIME` as init started, in nanoseconds
        /// since the epoch (0: not known): how far the guest's clock is
        /// from the host's.
        #[serde(default)]
        realtime_ns: u64,
        /// The guest kernel's release (`uname -r`; empty: not known), which
        /// the host holds against the kernel it meant to boot.
        #[serde(default)]
        release: String,
    },
    /// The body started.
    BodyStarted,
    /// A scenario step starts (before its ops are applied): the step
    /// boundaries of reports and traces.
    StepStarted {
        /// The step's index, from 0.
        index: u32,
        /// The guest kernel's uptime at the step's start, in milliseconds
        /// (the guest's clock).
        uptime_ms: u64,
        /// A short label of each op the step applies.
        ops: Vec<String>,
    },
    /// The body's verdict. `body_error` is set when the body returned `Err`
    /// or panicked; `verdict` then holds that failure.
    Verdict {
        /// The verdict.
        verdict: AssertResult,
        /// The body's error or panic message, if it did not return `Ok`.
        body_error: Option<String>,
        /// How long the body ran, in milliseconds.
        body_ms: u64,
        /// The kinds of the typed errors behind a failure (`StartupDied`,
        /// `SchedulerDied`, `SCX_EXIT_ERROR_STALL`, ...), for `expect_err`
        /// matchers.
        #[serde(default)]
        error_kinds: Vec<crate::scheduler::ErrorKind>,
    },
    /// A log line from the guest side of the harness.
    Log(String),
    /// The scheduler's BPF programs with the verifier's figures, read
    /// after it attached.
    BpfPrograms(Vec<crate::scheduler::ProgInfo>),
    /// An auto-repro or on-request probe VM's records: the facade's
    /// `ktstr_probe::guest::Capture`, as JSON (this crate, the guest side,
    /// does not depend on the probe crate).
    ProbeRecords(serde_json::Value),
    /// The guest harness itself failed (not the test body).
    GuestError(String),
    /// A scheduler died without the harness causing it: the kind, reason and
    /// message the kernel gave, and how its process ended.
    SchedulerDied(crate::scheduler::SchedulerDied),
    /// Output of a shell command (`ktstr shell --exec`), a chunk of its
    /// stdout and stderr as they came.
    ShellOutput(Vec<u8>),
    /// The result of a shell command (`ktstr shell --exec`): its exit status.
    ShellExit {
        /// The command's exit status (128 + signal when killed).
        status: i32,
    },
    /// A restore agent is up and waits for the host's hand-off
    /// ([`HandOff`]): the machine can be saved now.
    AgentReady {
        /// Guest uptime, in milliseconds.
        uptime_ms: u64,
        /// The agent's protocol version (`runtime::AGENT_VERSION`).
        version: u32,
    },
    /// A step asks the host for a snapshot of the guest with every vCPU
    /// paused (`Op::CaptureSnapshot`). The host answers by raising the
    /// `acked` word to `seq` once the VM runs again.
    SnapshotRequest {
        /// The snapshot's name, as the step gave it (`periodic-N` for the
        /// periodic ones).
        name: String,
        /// The request's number: 1, 2, ... in the order the guest sent them.
        seq: u64,
        /// One of the test's `num_snapshots`, paced by the guest's clock over
        /// the body (not a step's named snapshot).
        #[serde(default)]
        periodic: bool,
    },
}

/// Why the host could not read the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The region does not start with the magic (guest never opened it).
    #[error("channel not initialized by the guest (no magic)")]
    NotInitialized,
    /// A frame is malformed: the guest's memory was corrupted.
    #[error("channel frame at ring offset {offset} is corrupt: {what}")]
    Corrupt {
        /// Ring offset of the frame.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), one table lookup per byte:
/// a restored guest checks megabytes of payload with it under TCG.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = (c >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(c & 1));
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

/// What the host hands a restored agent through the channel's header: the
/// time to set and fresh bytes for the guest's RNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    /// The host's `CLOCK_REALTIME`, nanoseconds since the epoch.
    pub realtime_ns: u64,
    /// Bytes from the host's RNG.
    pub random: [u8; 64],
}

fn ring_copy_in(mem: &dyn ChannelMem, cap: u64, pos: u64, bytes: &[u8]) {
    let at = pos % cap;
    let first = (cap - at).min(bytes.len() as u64) as usize;
    mem.write(DATA + at, &bytes[..first]);
    if first < bytes.len() {
        mem.write(DATA, &bytes[first..]);
    }
}

fn ring_copy_out(mem: &dyn ChannelMem, cap: u64, pos: u64, buf: &mut [u8]) {
    let at = pos % cap;
    let first = (cap - at).min(buf.len() as u64) as usize;
    mem.read(DATA + at, &mut buf[..first]);
    if first < buf.len() {
        mem.read(DATA, &mut buf[first..]);
    }
}

fn padded(n: u64) -> u64 {
    (n + 7) & !7
}

/// The guest's end: appends messages.
#[derive(Debug)]
pub(crate) struct Writer<M: ChannelMem> {
    mem: M,
    cap: u64,
}

impl<M: ChannelMem> Writer<M> {
    /// Initializes the region (`size` bytes) and returns its writer.
    pub fn init(mem: M, size: u64) -> Self {
        for off in [OFF_HEAD, OFF_TAIL, OFF_DROPPED, OFF_SIGNALS, OFF_ACKED] {
            mem.store_u64(off, 0);
        }
        mem.store_u64(OFF_SIZE, size);
        mem.store_u64(OFF_MAGIC, MAGIC);
        Writer {
            mem,
            cap: size - DATA,
        }
    }

    /// Attaches to a region another process of the guest initialized.
    pub fn attach(mem: M) -> Option<Self> {
        if mem.load_u64(OFF_MAGIC) != MAGIC {
            return None;
        }
        let size = mem.load_u64(OFF_SIZE);
        (size > DATA).then(|| Writer {
            mem,
            cap: size - DATA,
        })
    }

    /// Sends a message; waits up to `patience` for the host to make room,
    /// then drops it (counted). Returns whether it was written.
    pub fn send(&self, msg: &Message, patience: std::time::Duration) -> bool {
        let payload = serde_json::to_vec(msg).unwrap_or_default();
        if payload.len() as u64 > MAX_PAYLOAD {
            self.mem
                .store_u64(OFF_DROPPED, self.mem.load_u64(OFF_DROPPED) + 1);
            return false;
        }
        let frame_len = padded(FRAME_HEADER + payload.len() as u64);
        let deadline = std::time::Instant::now() + patience;
        let head = self.mem.load_u64(OFF_HEAD);
        loop {
            let tail = self.mem.load_u64(OFF_TAIL);
            if self.cap - (head - tail) >= frame_len {
                break;
            }
            if std::time::Instant::now() >= deadline {
                self.mem
                    .store_u64(OFF_DROPPED, self.mem.load_u64(OFF_DROPPED) + 1);
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut frame = Vec::with_capacity(frame_len as usize);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&1u32.to_le_bytes()); // kind 1: JSON message
        frame.extend_from_slice(&crc32(&payload).to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&payload);
        frame.resize(frame_len as usize, 0);
        ring_copy_in(&self.mem, self.cap, head, &frame);
        self.mem.store_u64(OFF_HEAD, head + frame_len);
        true
    }

    /// The highest request `seq` the host has answered
    /// ([`Message::SnapshotRequest`]).
    pub fn acked(&self) -> u64 {
        self.mem.load_u64(OFF_ACKED)
    }

    /// The host's hand-off to a restored agent, once written; never blocks.
    pub fn hand_off(&self) -> Option<HandOff> {
        read_hand_off(&self.mem)
    }
}

fn read_hand_off(mem: &dyn ChannelMem) -> Option<HandOff> {
    if mem.load_u64(OFF_GO) != GO {
        return None;
    }
    let mut random = [0u8; 64];
    mem.read(OFF_RANDOM, &mut random);
    Some(HandOff {
        realtime_ns: mem.load_u64(OFF_TIME),
        random,
    })
}

/// The host's end: consumes messages.
#[derive(Debug)]
pub struct Reader<M: ChannelMem> {
    mem: M,
    /// A watching reader's own position in the ring (`None`: the reader
    /// consumes, through the region's `tail` word).
    watched_to: Option<u64>,
}

impl<M: ChannelMem> Reader<M> {
    /// A reader over the region that consumes what it reads: the guest
    /// reuses the room.
    pub fn new(mem: M) -> Self {
        Reader {
            mem,
            watched_to: None,
        }
    }

    /// A reader that never writes the region: it keeps its position to
    /// itself and does not answer requests ([`Reader::ack`] does nothing). A
    /// deterministic guest must not see when the host read it; the ring
    /// fills instead, after which the guest drops frames (counted), the
    /// same in every run.
    pub fn watching(mem: M) -> Self {
        Reader {
            mem,
            watched_to: Some(0),
        }
    }

    /// Every complete message written since the last call.
    pub fn poll(&mut self) -> Result<Vec<Message>, ChannelError> {
        if self.mem.load_u64(OFF_MAGIC) != MAGIC {
            return Err(ChannelError::NotInitialized);
        }
        let size = self.mem.load_u64(OFF_SIZE);
        let cap = size
            .checked_sub(DATA)
            .filter(|c| *c > 0)
            .ok_or(ChannelError::Corrupt {
                offset: 0,
                what: format!("region size {size} is smaller than its header"),
            })?;
        let head = self.mem.load_u64(OFF_HEAD);
        let mut tail = match self.watched_to {
            Some(t) => t,
            None => self.mem.load_u64(OFF_TAIL),
        };
        let corrupt = |offset: u64, what: String| ChannelError::Corrupt { offset, what };
        if head < tail || head - tail > cap {
            return Err(corrupt(
                tail,
                format!("head {head} and tail {tail} are inconsistent"),
            ));
        }
        let mut out = Vec::new();
        while tail < head {
            let mut hdr = [0u8; FRAME_HEADER as usize];
            ring_copy_out(&self.mem, cap, tail, &mut hdr);
            let len = u64::from(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
            let crc = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            let frame_len = padded(FRAME_HEADER + len);
            if len > MAX_PAYLOAD || frame_len > head - tail {
                return Err(corrupt(
                    tail,
                    format!("frame length {len} overruns the ring"),
                ));
            }
            let mut payload = vec![0u8; len as usize];
            ring_copy_out(&self.mem, cap, tail + FRAME_HEADER, &mut payload);
            if crc32(&payload) != crc {
                return Err(corrupt(tail, "checksum mismatch".into()));
            }
            let msg = serde_json::from_slice(&payload)
                .map_err(|e| corrupt(tail, format!("undecodable message: {e}")))?;
            out.push(msg);
            tail += frame_len;
            match &mut self.watched_to {
                Some(t) => *t = tail,
                None => self.mem.store_u64(OFF_TAIL, tail),
            }
        }
        Ok(out)
    }

    /// Frames the guest dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.mem.load_u64(OFF_DROPPED)
    }

    /// Hands `h` to a restored agent waiting in `Writer::hand_off`. The
    /// region is marked uninitialized first: the agent's earlier messages
    /// were read before the save, and the init it starts initializes the
    /// region anew.
    pub fn hand_off(&self, h: &HandOff) {
        self.mem.store_u64(OFF_MAGIC, 0);
        self.mem.store_u64(OFF_TIME, h.realtime_ns);
        self.mem.write(OFF_RANDOM, &h.random);
        self.mem.store_u64(OFF_GO, GO);
    }

    /// Tells the guest that its request `seq` (and every earlier one) is
    /// answered. Never lowers the word.
    pub fn ack(&self, seq: u64) {
        if self.watched_to.is_none()
            && self.mem.load_u64(OFF_MAGIC) == MAGIC
            && seq > self.mem.load_u64(OFF_ACKED)
        {
            self.mem.store_u64(OFF_ACKED, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// An in-process region.
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
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn messages_round_trip_across_wraparound() {
        let buf = Buf(Mutex::new(vec![0; 0x1000 + 512]));
        let w = Writer::init(&buf, 0x1000 + 512);
        let mut r = Reader::new(&buf);
        assert!(r.poll().expect("empty").is_empty());
        for i in 0..50 {
            let msg = Message::Log(format!("line {i} {}", "x".repeat(i % 40)));
            assert!(
                w.send(&msg, Duration::ZERO),
                "frame {i} fits after draining"
            );
            assert_eq!(r.poll().expect("poll"), vec![msg]);
        }
        // Without a reader the ring fills and further frames are dropped, counted.
        let mut sent = 0;
        while w.send(&Message::Log("fill".into()), Duration::ZERO) {
            sent += 1;
        }
        assert!(sent > 0);
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.poll().expect("poll").len(), sent);
        let v = Message::Verdict {
            verdict: AssertResult::fail_msg("x"),
            body_error: None,
            body_ms: 5,
            error_kinds: vec![crate::scheduler::ErrorKind::StartupDied],
        };
        assert!(w.send(&v, Duration::ZERO));
        assert_eq!(r.poll().expect("poll"), vec![v]);
        // Snapshot requests are answered through the acked word, which only rises.
        let req = Message::SnapshotRequest {
            name: "spinners".into(),
            seq: 2,
            periodic: false,
        };
        assert!(w.send(&req, Duration::ZERO));
        assert_eq!(r.poll().expect("poll"), vec![req]);
        assert_eq!(w.acked(), 0);
        r.ack(2);
        r.ack(1);
        assert_eq!(w.acked(), 2);
        // A restored agent's hand-off: nothing until the host writes it; the
        // region then waits for a fresh init.
        assert_eq!(w.hand_off(), None);
        let h = HandOff {
            realtime_ns: 1_700_000_000_123_456_789,
            random: [7; 64],
        };
        r.hand_off(&h);
        assert_eq!(w.hand_off(), Some(h));
        assert_eq!(r.poll(), Err(ChannelError::NotInitialized));
        let w = Writer::init(&buf, 0x1000 + 512);
        assert!(w.send(&Message::BodyStarted, Duration::ZERO));
        assert_eq!(r.poll().expect("poll"), vec![Message::BodyStarted]);
    }

    #[test]
    fn a_watching_reader_reads_everything_and_writes_nothing() {
        let buf = Buf(Mutex::new(vec![0; 0x1000 + 2048]));
        let w = Writer::init(&buf, 0x1000 + 2048);
        let mut r = Reader::watching(&buf);
        let mut seen = Vec::new();
        // More than the ring holds: the guest drops once it is full.
        for i in 0..40u64 {
            w.send(&Message::Log(format!("{i:0>100}")), Duration::ZERO);
            seen.extend(r.poll().expect("poll"));
        }
        assert!(!seen.is_empty());
        r.ack(5);
        assert_eq!((&buf).load_u64(OFF_TAIL), 0);
        assert_eq!((&buf).load_u64(OFF_ACKED), 0);
        assert_eq!(seen.len() as u64 + r.dropped(), 40);
        assert!(r.dropped() > 0);
    }

    #[test]
    fn corruption_is_reported_not_panicked() {
        let buf = Buf(Mutex::new(vec![0; 0x2000]));
        let mut r = Reader::new(&buf);
        assert_eq!(r.poll(), Err(ChannelError::NotInitialized));
        let w = Writer::init(&buf, 0x2000);
        assert!(w.send(&Message::Log("hello".into()), Duration::ZERO));
        buf.0.lock().expect("lock")[0x1000 + 20] ^= 0xff;
        assert!(matches!(r.poll(), Err(ChannelError::Corrupt { .. })));
        // Garbage everywhere: still no panic.
        let mut seed = 7u32;
        for _ in 0..200 {
            {
                let mut b = buf.0.lock().expect("lock");
                for x in b.iter_mut().skip(0x10) {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    *x = (seed >> 16) as u8;
                }
            }
            let _ = Reader::new(&buf).poll();
        }
    }
}
