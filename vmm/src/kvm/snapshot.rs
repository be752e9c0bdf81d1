//! The own VMM's snapshot image: a small versioned header, the machine's
//! state, then guest RAM as a sparse file.
//!
//! ```text
//! 0      "KTSTRKVM", version (u32 LE), 0 (u32), state length, RAM offset,
//!        RAM length (u64 LE each), zero up to 64
//! 64     the state: tagged records (tag u32, length u32, bytes): a JSON
//!        description of the machine (topology, node sizes, payload size,
//!        kernel command line, where the boot put the RSDP and initrd; a
//!        restore checks it against its spec), COM1 and COM2, the VM's KVM
//!        state (PIT, clock, PIC x2, IOAPIC), then each vCPU's
//! RAM    at a page-aligned offset: every node's memory, in node order,
//!        each page at its node offset; pages that are zero are not
//!        written (holes)
//! ```
//!
//! Saving reads only the pages the guest touched (`SEEK_DATA` on the node
//! memfds), restoring reads only the pages written (`SEEK_DATA` on the
//! image), into fresh memfds. The payload region is not in the image: each
//! restore fills its own.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{Value, json};
use vm_superio::serial::SerialState;

use super::state::{Reader, Records, VcpuState, VmState};
use crate::{GuestRam, KvmStateError, VmSpec, VmmError};

const MAGIC: &[u8; 8] = b"KTSTRKVM";
/// Bumped whenever the layout or a record changes.
pub(crate) const VERSION: u32 = 1;
const HEADER: usize = 64;
const PAGE: u64 = 4096;
const T_META: u32 = 0x1;
const T_SERIAL: u32 = 0x2;

fn error(image: &Path, why: impl Into<String>) -> VmmError {
    VmmError::Snapshot {
        image: image.to_path_buf(),
        why: why.into(),
    }
}

/// What a restore must match, and where the boot placed things.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub(crate) topology: String,
    pub(crate) node_bytes: Vec<u64>,
    pub(crate) payload_bytes: u64,
    pub(crate) cmdline: String,
    pub(crate) rsdp: u64,
    pub(crate) initrd: Option<(u64, u64)>,
}

impl Meta {
    pub(crate) fn of(spec: &VmSpec, rsdp: u64, initrd: Option<(u64, u64)>) -> Self {
        Meta {
            topology: spec.topology.to_string(),
            node_bytes: spec.node_memory_bytes(),
            payload_bytes: spec.payload_bytes,
            cmdline: super::x86_64::boot::kernel_cmdline(spec),
            rsdp,
            initrd,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "topology": self.topology,
            "node_bytes": self.node_bytes,
            "payload_bytes": self.payload_bytes,
            "cmdline": self.cmdline,
            "rsdp": self.rsdp,
            "initrd": self.initrd.map(|(a, s)| [a, s]),
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let initrd = match v.get("initrd")? {
            Value::Null => None,
            Value::Array(a) => Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?)),
            _ => return None,
        };
        Some(Meta {
            topology: v.get("topology")?.as_str()?.to_string(),
            node_bytes: v
                .get("node_bytes")?
                .as_array()?
                .iter()
                .map(Value::as_u64)
                .collect::<Option<_>>()?,
            payload_bytes: v.get("payload_bytes")?.as_u64()?,
            cmdline: v.get("cmdline")?.as_str()?.to_string(),
            rsdp: v.get("rsdp")?.as_u64()?,
            initrd,
        })
    }

    /// Why an image of `self` cannot restore as `want`, if it cannot.
    fn mismatch(&self, want: &Meta) -> Option<String> {
        let differs = |what: &str, a: String, b: String| {
            (a != b).then(|| format!("the image's {what} is {a}, the spec's {b}"))
        };
        differs("topology", self.topology.clone(), want.topology.clone())
            .or_else(|| {
                differs(
                    "node memory",
                    format!("{:?}", self.node_bytes),
                    format!("{:?}", want.node_bytes),
                )
            })
            .or_else(|| {
                differs(
                    "payload region",
                    self.payload_bytes.to_string(),
                    want.payload_bytes.to_string(),
                )
            })
            .or_else(|| {
                differs(
                    "kernel command line",
                    self.cmdline.clone(),
                    want.cmdline.clone(),
                )
            })
            .map(|m| format!("{m}: restore with the spec the machine was booted from"))
    }
}

fn encode_serial(s: &SerialState, out: &mut Records) {
    let mut b = vec![
        s.baud_divisor_low,
        s.baud_divisor_high,
        s.interrupt_enable,
        s.interrupt_identification,
        s.line_control,
        s.line_status,
        s.modem_control,
        s.modem_status,
        s.scratch,
    ];
    b.extend_from_slice(&s.in_buffer);
    out.raw(T_SERIAL, &b);
}

fn decode_serial(r: &mut Reader<'_>) -> Result<SerialState, KvmStateError> {
    let b = r.raw(T_SERIAL)?;
    if b.len() < 9 {
        return Err(KvmStateError::BadLength {
            record: "serial",
            len: b.len(),
        });
    }
    Ok(SerialState {
        baud_divisor_low: b[0],
        baud_divisor_high: b[1],
        interrupt_enable: b[2],
        interrupt_identification: b[3],
        line_control: b[4],
        line_status: b[5],
        modem_control: b[6],
        modem_status: b[7],
        scratch: b[8],
        in_buffer: b[9..].to_vec(),
    })
}

/// A saved machine's state (everything but RAM).
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) meta: Meta,
    pub(crate) serial: [SerialState; 2],
    pub(crate) vm: VmState,
    pub(crate) vcpus: Vec<VcpuState>,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VmState")
    }
}

/// The byte ranges of `fd` in `[start, end)` that hold data (all of it
/// where the file system cannot say).
fn data_extents(fd: &File, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on a descriptor this function borrows; it only
        // moves the file offset, which nothing here relies on.
        let data = unsafe { libc::lseek(fd.as_raw_fd(), pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO) {
                out.push((pos, end));
            }
            break;
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd.as_raw_fd(), data as i64, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data, hole));
        pos = hole;
    }
    out
}

/// Where each node's memory starts in the RAM part of the image.
fn node_bases(node_bytes: &[u64]) -> Vec<u64> {
    node_bytes
        .iter()
        .scan(0u64, |at, &n| {
            let base = *at;
            *at += n;
            Some(base)
        })
        .collect()
}

const CHUNK: usize = 1 << 20;
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// Writes `saved` and the non-zero pages of `ram` to `image` (replacing it).
pub(crate) fn write(image: &Path, saved: &Saved, ram: &GuestRam) -> Result<(), VmmError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| error(image, format!("{what}: {e}"))
    };
    let mut state = Records::default();
    state.raw(T_META, saved.meta.to_json().to_string().as_bytes());
    for s in &saved.serial {
        encode_serial(s, &mut state);
    }
    saved.vm.encode(&mut state);
    for v in &saved.vcpus {
        v.encode(&mut state);
    }
    let ram_offset = (HEADER as u64 + state.0.len() as u64).div_ceil(PAGE) * PAGE;
    let ram_bytes: u64 = saved.meta.node_bytes.iter().sum();
    let mut head = [0u8; HEADER];
    head[..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[16..24].copy_from_slice(&(state.0.len() as u64).to_le_bytes());
    head[24..32].copy_from_slice(&ram_offset.to_le_bytes());
    head[32..40].copy_from_slice(&ram_bytes.to_le_bytes());

    if image.exists() {
        std::fs::remove_file(image).map_err(io("removing the old image"))?;
    }
    let file = File::create(image).map_err(io("creating the image"))?;
    file.write_all_at(&head, 0).map_err(io("writing"))?;
    file.write_all_at(&state.0, HEADER as u64)
        .map_err(io("writing"))?;
    file.set_len(ram_offset + ram_bytes)
        .map_err(io("sizing the image"))?;

    let bases = node_bases(&saved.meta.node_bytes);
    let node_files = ram.files();
    let mut buf = vec![0u8; CHUNK];
    for r in ram.layout() {
        let node = r.node as usize;
        for (start, end) in data_extents(&node_files[node], r.node_offset, r.node_offset + r.size) {
            let mut at = start;
            while at < end {
                let n = ((end - at) as usize).min(CHUNK);
                // The node's memfd is the guest RAM the mapping shows.
                node_files[node]
                    .read_exact_at(&mut buf[..n], at)
                    .map_err(io("reading guest RAM"))?;
                // Write each run of non-zero pages.
                let mut page = 0;
                while page < n {
                    // Slice equality of bytes is a memcmp, quick even unoptimized.
                    let zero = |p: usize| {
                        let page = &buf[p..(p + PAGE as usize).min(n)];
                        page == &ZERO_PAGE[..page.len()]
                    };
                    if zero(page) {
                        page += PAGE as usize;
                        continue;
                    }
                    let run = page;
                    while page < n && !zero(page) {
                        page += PAGE as usize;
                    }
                    let end_run = page.min(n);
                    let off = ram_offset + bases[node] + at + run as u64;
                    file.write_all_at(&buf[run..end_run], off)
                        .map_err(io("writing guest RAM"))?;
                }
                at += n as u64;
            }
        }
    }
    file.sync_data().map_err(io("flushing the image"))?;
    Ok(())
}

/// An opened image: its state, and where its RAM is.
pub(crate) struct Opened {
    pub(crate) saved: Saved,
    file: File,
    ram_offset: u64,
}

/// Reads the header and state of `image` and checks them against `spec`.
pub(crate) fn open(image: &Path, spec: &VmSpec, want: &Meta) -> Result<Opened, VmmError> {
    let file = File::open(image).map_err(|e| {
        error(
            image,
            format!("cannot open it ({e}): save a machine to it first"),
        )
    })?;
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| error(image, format!("reading the header: {e}")))?;
    if &head[..8] != MAGIC {
        return Err(error(image, "not an image of the own KVM VMM (bad magic)"));
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(error(
            image,
            format!("image version {version}, this build reads {VERSION}: save it again"),
        ));
    }
    let (state_len, ram_offset, ram_bytes) = (u64_at(16), u64_at(24), u64_at(32));
    if state_len > 64 << 20 || ram_offset < HEADER as u64 + state_len {
        return Err(error(image, "corrupt header"));
    }
    let mut state = vec![0u8; state_len as usize];
    file.read_exact_at(&mut state, HEADER as u64)
        .map_err(|e| error(image, format!("reading the state: {e}")))?;
    let mut r = Reader::new(&state);
    let bad = |source| VmmError::MachineState {
        image: image.to_path_buf(),
        source,
    };
    let meta_json: Value = serde_json::from_slice(r.raw(T_META).map_err(bad)?)
        .map_err(|e| error(image, format!("machine description: {e}")))?;
    let meta = Meta::from_json(&meta_json).ok_or_else(|| {
        error(
            image,
            format!("machine description incomplete: {meta_json}"),
        )
    })?;
    if let Some(why) = meta.mismatch(want) {
        return Err(error(image, why));
    }
    if ram_bytes != meta.node_bytes.iter().sum::<u64>() {
        return Err(error(image, "RAM length differs from the node sizes"));
    }
    let serial = [
        decode_serial(&mut r).map_err(bad)?,
        decode_serial(&mut r).map_err(bad)?,
    ];
    let vm = VmState::decode(&mut r).map_err(bad)?;
    let vcpus = (0..spec.topology.nr_cpus())
        .map(|_| VcpuState::decode(&mut r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    Ok(Opened {
        saved: Saved {
            meta,
            serial,
            vm,
            vcpus,
        },
        file,
        ram_offset,
    })
}

impl Opened {
    /// Copies the image's RAM pages into `ram` (fresh, all zero).
    pub(crate) fn fill(&self, image: &Path, ram: &GuestRam) -> Result<(), VmmError> {
        let bases = node_bases(&self.saved.meta.node_bytes);
        let mut buf = vec![0u8; CHUNK];
        for r in ram.layout() {
            let from = self.ram_offset + bases[r.node as usize] + r.node_offset;
            for (start, end) in data_extents(&self.file, from, from + r.size) {
                let mut at = start;
                while at < end {
                    let n = ((end - at) as usize).min(CHUNK);
                    self.file
                        .read_exact_at(&mut buf[..n], at)
                        .map_err(|e| error(image, format!("reading guest RAM: {e}")))?;
                    // Into the node's memfd, which the VMM's mapping shows.
                    ram.files()[r.node as usize]
                        .write_all_at(&buf[..n], r.node_offset + (at - from))
                        .map_err(|e| error(image, format!("filling guest RAM: {e}")))?;
                    at += n as u64;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            topology: "1n1l2c1t".into(),
            node_bytes: vec![4 << 20],
            payload_bytes: 0,
            cmdline: "console=ttyS0".into(),
            rsdp: 0xe0000,
            initrd: Some((0x10_0000, 42)),
        }
    }

    #[test]
    fn the_description_round_trips_and_a_mismatch_says_what_differs() {
        let m = meta();
        assert_eq!(Meta::from_json(&m.to_json()), Some(m.clone()));
        assert_eq!(m.mismatch(&m), None);
        let mut other = m.clone();
        other.payload_bytes = 1 << 20;
        let why = m.mismatch(&other).expect("differs");
        assert!(
            why.contains("payload region is 0, the spec's 1048576"),
            "{why}"
        );
        other = m.clone();
        other.cmdline.push_str(" quiet");
        assert!(
            m.mismatch(&other)
                .expect("differs")
                .contains("command line")
        );
    }

    #[test]
    fn holes_are_skipped_and_data_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sparse");
        let f = File::create(&p).expect("create");
        f.set_len(64 << 20).expect("size");
        f.write_all_at(b"x", 16 << 20).expect("write");
        let ext = data_extents(&f, 0, 64 << 20);
        assert!(!ext.is_empty());
        assert!(ext.iter().all(|&(s, e)| s < e && e <= 64 << 20));
        assert!(ext.iter().any(|&(s, e)| s <= 16 << 20 && 16 << 20 < e));
        let covered: u64 = ext.iter().map(|&(s, e)| e - s).sum();
        // A file system that knows holes lists far less than the whole file.
        assert!(covered <= 64 << 20);
        assert_eq!(node_bases(&[3, 4, 5]), [0, 3, 7]);
    }
}
