//! Keeping a scheduler's BPF maps and programs alive past its death, and reading the
//! verifier's figures of its programs.
//!
//! A crashed scheduler's loader exits and its maps are freed with it — before the host can
//! read them for the failure dump. Right after the scheduler attaches, the supervisor opens
//! every map and program that appeared since it was spawned (`BPF_*_GET_FD_BY_ID`) and holds
//! the descriptors until the next scheduler attaches or the guest ends: the kernel keeps an
//! object while a descriptor refers to it. Holding costs a few syscalls per attach.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// `enum bpf_cmd` (`include/uapi/linux/bpf.h`).
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Most objects held (a loop over ids ends here whatever the kernel says).
const MAX_HELD: usize = 4096;
/// `sizeof(struct bpf_prog_info)` up to `attach_btf_id` (Linux 5.16+), padded to 8.
const PROG_INFO_LEN: usize = 232;

/// What the kernel says of one loaded program (`struct bpf_prog_info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgInfo {
    /// Program id.
    pub id: u32,
    /// Name (at most 15 bytes: `BPF_OBJ_NAME_LEN`).
    pub name: String,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// Instructions the verifier processed (`verified_insns`, Linux 5.16+; 0 before).
    pub verified_insns: u32,
    /// Size of the verified (translated) program, instructions.
    pub xlated_insns: u32,
    /// Size of the JIT-compiled program, bytes.
    pub jited_bytes: u32,
    /// When it was loaded, ns of `CLOCK_BOOTTIME` (set before the verifier ran).
    pub load_time_ns: u64,
    /// States the verifier explored (from the verifier probe; `None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<u32>,
    /// Most states the verifier kept at once (as `states`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_states: Option<u32>,
    /// How long the verifier took, ns (`bpf_check()`'s own measure; as `states`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_ns: Option<u64>,
}

/// The largest id of a map and of a program loaded now: objects loaded later have larger
/// ids (the kernel hands them out in increasing order).
pub(super) fn last_ids() -> (u32, u32) {
    let last = |cmd| {
        let mut id = 0;
        let mut n = 0;
        while let Some(next) = next_id(cmd, id) {
            id = next;
            n += 1;
            if n > 1 << 20 {
                break;
            }
        }
        id
    };
    (last(BPF_MAP_GET_NEXT_ID), last(BPF_PROG_GET_NEXT_ID))
}

/// The maps and programs of one scheduler, held open.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Never read: held so the maps outlive the scheduler (closed on drop).
    _maps: Vec<OwnedFd>,
    progs: Vec<OwnedFd>,
    verifier: Vec<super::VerifierRecord>,
}

impl Held {
    /// Opens every map and program whose id is above `after` (`last_ids` before the
    /// scheduler was spawned). What cannot be opened (freed meanwhile) is skipped.
    pub(crate) fn take(after: (u32, u32)) -> Held {
        let open = |next_cmd, fd_cmd, mut id: u32| {
            let mut fds = Vec::new();
            while fds.len() < MAX_HELD {
                let Some(next) = next_id(next_cmd, id) else {
                    break;
                };
                id = next;
                if let Some(fd) = fd_by_id(fd_cmd, id) {
                    fds.push(fd);
                }
            }
            fds
        };
        Held {
            _maps: open(BPF_MAP_GET_NEXT_ID, BPF_MAP_GET_FD_BY_ID, after.0),
            progs: open(BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, after.1),
            verifier: Vec::new(),
        }
    }

    /// With the verifier probe's records of the loads (see the `verifier_probe` module).
    pub(crate) fn with_verifier(mut self, records: Vec<super::VerifierRecord>) -> Held {
        self.verifier = records;
        self
    }

    /// The held programs, as the kernel describes them.
    pub(crate) fn progs(&self) -> Vec<ProgInfo> {
        let mut infos: Vec<ProgInfo> = self.progs.iter().filter_map(prog_info).collect();
        for p in &mut infos {
            if let Some(r) = super::verifier_probe::last_by_name(&self.verifier, &p.name) {
                p.states = Some(r.states);
                p.peak_states = Some(r.peak_states);
                p.verification_ns = Some(r.verification_ns);
            }
        }
        infos
    }
}

/// `bpf(cmd, attr, size)`.
fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
    // SAFETY: `attr` is a valid, writable buffer of the length passed; the kernel reads
    // and writes at most that many bytes of it (union bpf_attr is zero-extended).
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// The next id after `start` (`BPF_*_GET_NEXT_ID`), `None` at the end or on error.
fn next_id(cmd: libc::c_long, start: u32) -> Option<u32> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&start.to_le_bytes());
    if sys_bpf(cmd, &mut attr) != 0 {
        return None;
    }
    Some(u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]]))
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> Option<OwnedFd> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&id.to_le_bytes());
    let fd = sys_bpf(cmd, &mut attr);
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_info(fd: &OwnedFd) -> Option<ProgInfo> {
    let mut info = [0u8; PROG_INFO_LEN];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_le_bytes());
    attr[4..8].copy_from_slice(&(PROG_INFO_LEN as u32).to_le_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
    if sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) != 0 {
        return None;
    }
    Some(parse_prog_info(&info))
}

/// `struct bpf_prog_info` (offsets of `include/uapi/linux/bpf.h`).
fn parse_prog_info(b: &[u8; PROG_INFO_LEN]) -> ProgInfo {
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let name = &b[64..80];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    ProgInfo {
        prog_type: u32_at(0),
        id: u32_at(4),
        jited_bytes: u32_at(16),
        xlated_insns: u32_at(20) / 8,
        load_time_ns: u64_at(40),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        verified_insns: u32_at(216),
        states: None,
        peak_states: None,
        verification_ns: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_info_fields_come_from_their_uapi_offsets() {
        let mut b = [0u8; PROG_INFO_LEN];
        b[0..4].copy_from_slice(&27u32.to_le_bytes()); // BPF_PROG_TYPE_STRUCT_OPS
        b[4..8].copy_from_slice(&12u32.to_le_bytes());
        b[16..20].copy_from_slice(&700u32.to_le_bytes());
        b[20..24].copy_from_slice(&(8 * 90u32).to_le_bytes());
        b[40..48].copy_from_slice(&5_000_000_000u64.to_le_bytes());
        b[64..77].copy_from_slice(b"ktstr_enqueue");
        b[216..220].copy_from_slice(&1234u32.to_le_bytes());
        assert_eq!(
            parse_prog_info(&b),
            ProgInfo {
                id: 12,
                name: "ktstr_enqueue".into(),
                prog_type: 27,
                verified_insns: 1234,
                xlated_insns: 90,
                jited_bytes: 700,
                load_time_ns: 5_000_000_000,
                states: None,
                peak_states: None,
                verification_ns: None,
            }
        );
    }
}
