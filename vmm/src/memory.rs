//! Guest physical RAM: where each NUMA node's memory sits in the guest's
//! physical address space, and its host mapping.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::VmmError;

/// Start of the PCI hole on the `pc` machine; RAM above it moves past 4 GiB.
const PC_LOWMEM_LIMIT: u64 = 0xe000_0000;
/// How much RAM QEMU's `pc` machine keeps below 4 GiB once it splits
/// (hw/i386/pc_piix.c: gigabyte-aligned 3 GiB).
const PC_LOWMEM_SPLIT: u64 = 0xc000_0000;
const FOUR_GIB: u64 = 1 << 32;

/// One contiguous range of guest RAM backed by part of one node's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// The NUMA node whose memory backs it.
    pub node: u32,
    /// Guest physical start.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset into the node's memory.
    pub node_offset: u64,
}

/// The RAM layout of QEMU's `pc` machine (which the own VMM copies, so the
/// guest sees the same map on both): node memories one after another from
/// address 0, split at 3 GiB around the PCI hole when RAM reaches 3.5 GiB.
pub fn pc_ram_layout(node_bytes: &[u64]) -> Vec<RamRegion> {
    let total: u64 = node_bytes.iter().sum();
    let lowmem = if total >= PC_LOWMEM_LIMIT {
        PC_LOWMEM_SPLIT
    } else {
        total
    };
    let mut out = Vec::new();
    let mut ram_off = 0u64;
    for (node, &size) in node_bytes.iter().enumerate() {
        let mut done = 0u64;
        while done < size {
            let off = ram_off + done;
            let (gpa, room) = if off < lowmem {
                (off, lowmem - off)
            } else {
                (FOUR_GIB + (off - lowmem), u64::MAX)
            };
            let len = room.min(size - done);
            out.push(RamRegion {
                node: node as u32,
                gpa,
                size: len,
                node_offset: done,
            });
            done += len;
        }
        ram_off += size;
    }
    out
}

/// An anonymous memory file of `size` bytes (zero-filled, sparse), closed on
/// exec.
pub(crate) fn memfd(name: &str, size: u64) -> Result<File, VmmError> {
    let cname = format!("{name}\0");
    // SAFETY: `cname` is NUL-terminated and outlives the call; the flags are
    // valid memfd_create flags.
    let fd = unsafe { libc::memfd_create(cname.as_ptr().cast(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(VmmError::os("memfd_create for guest memory"));
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|e| VmmError::Memory(format!("sizing {name} to {size} bytes: {e}")))?;
    Ok(file)
}

/// Guest RAM shared between the VM and the harness: one memory file per NUMA
/// node (an anonymous memfd, so nothing appears in /dev/shm and the kernel
/// frees it when the last user exits), mapped into the host.
#[derive(Debug)]
pub struct GuestRam {
    files: Vec<File>,
    layout: Vec<RamRegion>,
    mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Creates and maps one memfd per node.
    pub fn new(node_bytes: &[u64]) -> Result<Self, VmmError> {
        let mut files = Vec::new();
        for (node, &size) in node_bytes.iter().enumerate() {
            files.push(memfd(&format!("ktstr-node{node}"), size)?);
        }
        let layout = pc_ram_layout(node_bytes);
        let mut ranges = Vec::new();
        for r in &layout {
            let f = files[r.node as usize].try_clone().map_err(|e| {
                VmmError::Memory(format!("duplicating node {} RAM fd: {e}", r.node))
            })?;
            let size = usize::try_from(r.size)
                .map_err(|_| VmmError::Memory("RAM region larger than the address space".into()))?;
            ranges.push((
                GuestAddress(r.gpa),
                size,
                Some(FileOffset::new(f, r.node_offset)),
            ));
        }
        let mem = GuestMemoryMmap::from_ranges_with_files(ranges)
            .map_err(|e| VmmError::Memory(format!("mapping guest RAM: {e}")))?;
        Ok(GuestRam { files, layout, mem })
    }

    /// The host mapping of guest physical memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The layout of RAM in guest physical memory.
    pub fn layout(&self) -> &[RamRegion] {
        &self.layout
    }

    /// The node memory files, in node order.
    pub(crate) fn files(&self) -> &[File] {
        &self.files
    }

    /// The raw descriptors of the node memory files, in node order (to hand to a VM process).
    pub fn node_fds(&self) -> Vec<i32> {
        self.files.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_ram_is_contiguous_from_zero() {
        let l = pc_ram_layout(&[256 << 20, 256 << 20]);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].gpa, l[0].size), (0, 256 << 20));
        assert_eq!((l[1].gpa, l[1].node, l[1].node_offset), (256 << 20, 1, 0));
    }

    #[test]
    fn large_ram_splits_around_the_pci_hole() {
        // 2 nodes x 2 GiB: node 1 straddles the 3 GiB split.
        let l = pc_ram_layout(&[2 << 30, 2 << 30]);
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!((l[1].node, l[1].gpa, l[1].size), (1, 2 << 30, 1 << 30));
        assert_eq!(
            (l[2].node, l[2].gpa, l[2].size, l[2].node_offset),
            (1, FOUR_GIB, 1 << 30, 1 << 30)
        );
        let total: u64 = l.iter().map(|r| r.size).sum();
        assert_eq!(total, 4 << 30);
    }

    #[test]
    fn host_mapping_is_shared_with_the_file() {
        let ram = GuestRam::new(&[4 << 20, 4 << 20]).expect("ram");
        ram.memory()
            .write_obj(0xdead_beefu32, GuestAddress((4 << 20) + 8))
            .expect("write");
        // Reading node 1's file at offset 8 sees the same word.
        let fd = ram.node_fds()[1];
        let mut word = [0u8; 4];
        // SAFETY: fd is a live memfd owned by `ram`; `word` is a valid 4-byte buffer.
        let n = unsafe { libc::pread(fd, word.as_mut_ptr().cast(), 4, 8) };
        assert_eq!(n, 4);
        assert_eq!(u32::from_le_bytes(word), 0xdead_beef);
        assert_eq!(ram.memory().num_regions(), 2);
    }
}
