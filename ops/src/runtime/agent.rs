//! The restore agent: boot once, restore many (docs/src/boot-once-restore-many.md).
//!
//! The host boots the test binary's base initramfs with an agent marker
//! ([`AGENT_MARKER`]) and no test configuration. The binary, PID 1, then
//! runs [`run_as_agent`]: it mounts what init mounts, tells the host it is
//! ready ([`Message::AgentReady`]) and sleeps until the host's hand-off. The
//! host saves the machine there. Each restore of it gets its own hand-off:
//! the host's time and random bytes in the channel's header, and the test's
//! overlay archive (configuration, schedulers' files, kernel config, probe
//! plan) in the payload region ([`encode_payload`]). The agent reseeds the
//! RNG, sets the clock, unpacks the overlay and execs `/init`, which finds
//! the configuration and runs [`super::run_as_init`] exactly as after a cold
//! boot.

use std::ffi::CString;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use super::system::{DevMem, DevMemError, console, power_off, setup_mounts, uptime_ms};
use crate::channel::{self, HandOff, Message, Writer};

/// The file whose presence (without a test configuration) makes PID 1 the
/// restore agent.
pub const AGENT_MARKER: &str = "/ktstr/agent";

/// The agent's protocol: the hand-off fields, the payload format and what
/// the agent does before exec. Bump it on any change; it is part of the
/// snapshot cache's key.
pub const AGENT_VERSION: u32 = 1;

/// The payload region's PCI vendor and device (QEMU's `ivshmem-plain`,
/// `ktstr_vmm::PAYLOAD_PCI_ID`), as sysfs prints them.
const PAYLOAD_DEVICE: (&str, &str) = ("0x1af4", "0x1110");

/// The payload's magic: "KTSTRPL1".
const PAYLOAD_MAGIC: u64 = u64::from_le_bytes(*b"KTSTRPL1");
/// Bytes before the payload's data: magic u64, version u32, crc32 u32 of
/// the data, data length u64, reserved u64.
pub(crate) const PAYLOAD_HEADER: usize = 32;

/// How long the agent sleeps between looks at the channel's `go` word.
const POLL: Duration = Duration::from_millis(1);

/// What is wrong with a payload region or the overlay archive in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PayloadError {
    /// The region cannot hold the header.
    #[error("payload region of {0} bytes")]
    RegionTooSmall(usize),
    /// The header's magic is missing.
    #[error("no payload magic (the host wrote no payload)")]
    NoMagic,
    /// The host wrote another protocol version.
    #[error("payload version {0}, this agent speaks {AGENT_VERSION}")]
    Version(u32),
    /// The data's length runs past the region.
    #[error("payload length {len} overruns the {region}-byte region")]
    Overrun {
        /// The length the header gives.
        len: usize,
        /// The region's size.
        region: usize,
    },
    /// The data's CRC-32 is not the header's.
    #[error("payload checksum mismatch")]
    Checksum,
    /// The archive ends inside an entry's header.
    #[error("archive ends inside a header at byte {0}")]
    CpioTruncated(usize),
    /// An entry lacks the `070701` magic.
    #[error("no newc magic at byte {0}")]
    CpioMagic(usize),
    /// A header field is not 8 hexadecimal digits.
    #[error("header field at byte {at} is not 8 hex digits: {field:?}")]
    CpioField {
        /// Offset of the entry.
        at: usize,
        /// The field as it reads.
        field: String,
    },
    /// An entry's name or data runs past the archive.
    #[error("entry at byte {0} overruns the archive")]
    CpioOverrun(usize),
    /// An entry's name is not UTF-8.
    #[error("entry name at byte {0} is not UTF-8")]
    CpioName(usize),
}

/// Why the agent could not hand the guest over to the test.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    /// The payload region or its archive is unusable.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The payload region could not be mapped.
    #[error(transparent)]
    Map(#[from] DevMemError),
    /// An archive path climbs out of `/`.
    #[error("archive path {0:?} leaves the root")]
    LeavesRoot(String),
    /// A symlink's target is not UTF-8.
    #[error("symlink {} target is not UTF-8", .0.display())]
    SymlinkTarget(PathBuf),
    /// An archive entry is neither a directory, a file nor a symlink.
    #[error("{name}: unsupported file type {mode:o}")]
    FileType {
        /// The archive path.
        name: String,
        /// Its file type bits.
        mode: u32,
    },
    /// Unpacking an entry failed.
    #[error("{op} {}: {source}", path.display())]
    Unpack {
        /// `mkdir`, `symlink`, `write`, `chmod`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The PCI devices could not be listed.
    #[error("/sys/bus/pci/devices: {0}")]
    PciDevices(std::io::Error),
    /// The payload device's BAR 2 has no address.
    #[error("{}: BAR 2 not assigned ({bar:?})", device.display())]
    BarUnassigned {
        /// The device's sysfs directory.
        device: PathBuf,
        /// Its BAR 2 line of `resource`.
        bar: String,
    },
    /// No payload device and no `ktstr.payload=` on the command line.
    #[error("no payload device (ivshmem 1af4:1110) on the PCI bus")]
    NoPayloadDevice,
    /// A system call or device the hand-off needs failed.
    #[error("{call}: {source}")]
    Os {
        /// The call or device (`RNDADDENTROPY`, `/dev/urandom`, `clock_settime`).
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl AgentError {
    fn last_os(call: &'static str) -> Self {
        AgentError::Os {
            call,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// True in PID 1 of a guest booted to become a snapshot: the agent marker
/// is there and no test configuration is (after the hand-off there is one,
/// and the exec'd init runs the test).
pub fn is_agent() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() == 1 };
    pid1 && std::path::Path::new(AGENT_MARKER).exists()
        && !std::path::Path::new(super::CONFIG_PATH).exists()
}

/// The payload region's contents for `overlay` (a plain newc cpio archive).
pub fn encode_payload(overlay: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAYLOAD_HEADER + overlay.len());
    out.extend_from_slice(&PAYLOAD_MAGIC.to_le_bytes());
    out.extend_from_slice(&AGENT_VERSION.to_le_bytes());
    out.extend_from_slice(&channel::crc32(overlay).to_le_bytes());
    out.extend_from_slice(&(overlay.len() as u64).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(overlay);
    out
}

/// The overlay archive in a payload region, checked.
pub(crate) fn decode_payload(region: &[u8]) -> Result<&[u8], PayloadError> {
    let word = |at: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&region[at..at + n]);
        u64::from_le_bytes(b)
    };
    if region.len() < PAYLOAD_HEADER {
        return Err(PayloadError::RegionTooSmall(region.len()));
    }
    if word(0, 8) != PAYLOAD_MAGIC {
        return Err(PayloadError::NoMagic);
    }
    let version = word(8, 4) as u32;
    if version != AGENT_VERSION {
        return Err(PayloadError::Version(version));
    }
    let len = usize::try_from(word(16, 8)).unwrap_or(usize::MAX);
    let data = region
        .get(PAYLOAD_HEADER..PAYLOAD_HEADER.saturating_add(len))
        .ok_or(PayloadError::Overrun {
            len,
            region: region.len(),
        })?;
    let crc = word(12, 4) as u32;
    if channel::crc32(data) != crc {
        return Err(PayloadError::Checksum);
    }
    Ok(data)
}

/// One entry of a newc archive.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CpioEntry<'a> {
    pub(crate) name: &'a str,
    pub(crate) mode: u32,
    pub(crate) data: &'a [u8],
}

/// The entries of a newc (`070701`) archive, up to its trailer.
pub(crate) fn cpio_entries(mut a: &[u8]) -> Result<Vec<CpioEntry<'_>>, PayloadError> {
    const HEADER: usize = 110;
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        if a.len() < HEADER {
            return Err(PayloadError::CpioTruncated(at));
        }
        if &a[..6] != b"070701" {
            return Err(PayloadError::CpioMagic(at));
        }
        let field = |i: usize| -> Result<usize, PayloadError> {
            let raw = &a[6 + 8 * i..14 + 8 * i];
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| PayloadError::CpioField {
                    at,
                    field: String::from_utf8_lossy(raw).into_owned(),
                })
        };
        let (mode, filesize, namesize) = (field(1)?, field(6)?, field(11)?);
        let name_end = HEADER + namesize;
        let data_at = name_end + pad(name_end);
        let data_end = data_at + filesize;
        if namesize == 0 || data_end > a.len() {
            return Err(PayloadError::CpioOverrun(at));
        }
        let name = std::str::from_utf8(&a[HEADER..name_end - 1])
            .map_err(|_| PayloadError::CpioName(at))?;
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push(CpioEntry {
            name,
            mode: mode as u32,
            data: &a[data_at..data_end],
        });
        let next = (data_end + pad(data_end)).min(a.len());
        a = &a[next..];
        at += next;
    }
}

/// Writes the archive's entries under `/`, unlinking each path first (a
/// file the running agent maps is replaced, never written in place).
fn unpack(overlay: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    for e in cpio_entries(overlay)? {
        if e.name.split('/').any(|c| c == "..") {
            return Err(AgentError::LeavesRoot(e.name.to_string()));
        }
        let path = std::path::Path::new("/").join(e.name.trim_start_matches('/'));
        let fail = |op: &'static str, source: std::io::Error| AgentError::Unpack {
            op,
            path: path.clone(),
            source,
        };
        match e.mode & 0o170_000 {
            0o040_000 => std::fs::create_dir_all(&path).map_err(|err| fail("mkdir", err))?,
            0o100_000 | 0o120_000 => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|err| fail("mkdir", err))?;
                }
                let _ = std::fs::remove_file(&path);
                if e.mode & 0o170_000 == 0o120_000 {
                    let target = std::str::from_utf8(e.data)
                        .map_err(|_| AgentError::SymlinkTarget(path.clone()))?;
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(|err| fail("symlink", err))?;
                } else {
                    std::fs::write(&path, e.data).map_err(|err| fail("write", err))?;
                    std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(e.mode & 0o7777),
                    )
                    .map_err(|err| fail("chmod", err))?;
                }
            }
            other => {
                return Err(AgentError::FileType {
                    name: e.name.to_string(),
                    mode: other,
                });
            }
        }
    }
    Ok(())
}

/// `ktstr.payload=SIZE@ADDR` (hex) on a kernel command line: where the own
/// KVM VMM, which has no PCI bus, puts the payload region.
fn payload_on_cmdline(cmdline: &str) -> Option<(u64, u64)> {
    let v = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ktstr.payload="))?;
    let (size, addr) = v.split_once('@')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    Some((hex(addr)?, hex(size)?))
}

/// The payload region's physical range: the PCI device's BAR 2 (QEMU), else
/// the command line's `ktstr.payload=` (the own KVM VMM).
fn payload_region() -> Result<(u64, u64), AgentError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(r) = payload_on_cmdline(&cmdline) {
        return Ok(r);
    }
    let dir = std::fs::read_dir("/sys/bus/pci/devices").map_err(AgentError::PciDevices)?;
    for d in dir.flatten() {
        let p = d.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        if (read("vendor").trim(), read("device").trim()) != PAYLOAD_DEVICE {
            continue;
        }
        let resource = read("resource");
        let bar = resource.lines().nth(2).unwrap_or_default();
        let mut f = bar
            .split_whitespace()
            .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16));
        if let (Some(Ok(start)), Some(Ok(end))) = (f.next(), f.next())
            && end > start
        {
            return Ok((start, end - start + 1));
        }
        return Err(AgentError::BarUnassigned {
            device: p.clone(),
            bar: bar.to_string(),
        });
    }
    Err(AgentError::NoPayloadDevice)
}

/// Adds the host's bytes to the guest's entropy pool, credited, and makes
/// the CRNG reseed from it at once: two restores of one image draw
/// different random numbers.
fn reseed(random: &[u8; 64]) -> Result<(), AgentError> {
    // linux/random.h: struct rand_pool_info { int entropy_count; int
    // buf_size; __u32 buf[]; }, RNDADDENTROPY _IOW('R', 0x03, int[2]),
    // RNDRESEEDCRNG _IO('R', 0x07).
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let mut info = Vec::with_capacity(8 + random.len());
    info.extend_from_slice(&((random.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(random.len() as i32).to_ne_bytes());
    info.extend_from_slice(random);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|source| AgentError::Os {
            call: "/dev/urandom",
            source,
        })?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: info is a complete rand_pool_info (header and buf_size bytes)
    // that outlives the call; the kernel only reads it.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) } < 0 {
        return Err(AgentError::last_os("RNDADDENTROPY"));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) } < 0 {
        return Err(AgentError::last_os("RNDRESEEDCRNG"));
    }
    Ok(())
}

/// Sets `CLOCK_REALTIME` to `ns` since the epoch.
fn set_clock(ns: u64) -> Result<(), AgentError> {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
        return Err(AgentError::last_os("clock_settime"));
    }
    Ok(())
}

/// What the agent does with a hand-off: the guest is the test's from here.
fn take_over(h: &HandOff, picked_up: Instant) -> Result<(), AgentError> {
    reseed(&h.random)?;
    let (gpa, len) = payload_region()?;
    let region = DevMem::map(gpa, len)?;
    unpack(decode_payload(region.bytes())?)?;
    // The host's time when it wrote the hand-off, plus what passed here
    // since the agent saw it.
    let since = u64::try_from(picked_up.elapsed().as_nanos()).unwrap_or(0);
    set_clock(h.realtime_ns.saturating_add(since))
}

/// Runs the restore agent. Call it first thing in PID 1; never returns.
pub fn run_as_agent() -> ! {
    setup_mounts();
    let ch = match DevMem::map(channel::CHANNEL_GPA, channel::CHANNEL_SIZE) {
        Ok(m) => Writer::init(m, channel::CHANNEL_SIZE),
        Err(e) => {
            console(&format!("agent: cannot map the host channel: {e}"));
            power_off();
        }
    };
    ch.send(
        &Message::AgentReady {
            uptime_ms: uptime_ms(),
            version: AGENT_VERSION,
        },
        Duration::from_secs(1),
    );
    // The host saves the machine while this loop sleeps; every restore of
    // it wakes here.
    let h = loop {
        if let Some(h) = ch.hand_off() {
            break h;
        }
        std::thread::sleep(POLL);
    };
    let picked_up = Instant::now();
    if let Err(e) = take_over(&h, picked_up) {
        console(&format!("agent: the hand-off failed: {e}"));
        power_off();
    }
    let init = CString::new("/init").expect("no NUL in a literal");
    let argv = [init.as_ptr(), std::ptr::null()];
    // SAFETY: argv is a NULL-terminated array of valid C strings that
    // outlive the call; execv keeps this process (PID 1) and its environment.
    unsafe { libc::execv(init.as_ptr(), argv.as_ptr()) };
    console(&format!(
        "agent: exec /init: {}",
        std::io::Error::last_os_error()
    ));
    power_off()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |name: &str, mode: u32, data: &[u8]| {
            let h = format!(
                "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (n, m, d) in entries {
            put(n, *m, d);
        }
        put("TRAILER!!!", 0, &[]);
        out
    }

    #[test]
    fn the_own_vmms_payload_region_is_read_from_the_command_line() {
        assert_eq!(
            payload_on_cmdline("console=ttyS0 ktstr.payload=4000000@e0000000 quiet"),
            Some((0xe000_0000, 0x400_0000))
        );
        assert_eq!(
            payload_on_cmdline("ktstr.payload=0x100000@0xe0000000"),
            Some((0xe000_0000, 0x10_0000))
        );
        assert_eq!(payload_on_cmdline("console=ttyS0"), None);
        assert_eq!(payload_on_cmdline("ktstr.payload=zz@1"), None);
    }

    #[test]
    fn a_payload_round_trips_and_damage_is_named() {
        let overlay = newc(&[
            ("ktstr", 0o040_755, b""),
            ("ktstr/config.json", 0o100_644, b"{}"),
        ]);
        let mut region = encode_payload(&overlay);
        region.resize(1 << 16, 0);
        assert_eq!(decode_payload(&region), Ok(&overlay[..]));
        let entries = cpio_entries(&overlay).expect("parse");
        assert_eq!(
            entries,
            [
                CpioEntry {
                    name: "ktstr",
                    mode: 0o040_755,
                    data: b""
                },
                CpioEntry {
                    name: "ktstr/config.json",
                    mode: 0o100_644,
                    data: b"{}"
                }
            ]
        );
        let mut bad = region.clone();
        bad[PAYLOAD_HEADER + 3] ^= 1;
        assert!(
            decode_payload(&bad)
                .expect_err("damaged")
                .to_string()
                .contains("checksum")
        );
        assert!(
            decode_payload(&[0u8; 64])
                .expect_err("empty")
                .to_string()
                .contains("magic")
        );
        let mut long = region.clone();
        long[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            decode_payload(&long)
                .expect_err("long")
                .to_string()
                .contains("overruns")
        );
        // Truncated archives are errors, never panics.
        for cut in [0, 10, 111, overlay.len() - 10] {
            assert!(cpio_entries(&overlay[..cut]).is_err(), "cut at {cut}");
        }
    }
}
