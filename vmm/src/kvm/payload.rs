//! The payload region of the own VMM ([`VmSpec::payload_bytes`]): a memfd
//! mapped into the guest as a second kind of memory slot at a fixed guest
//! physical address in the PCI hole, outside RAM.
//!
//! The VMM has no PCI bus, so the guest cannot find the region as QEMU's
//! ivshmem BAR. It finds it on the kernel command line instead:
//! `ktstr.payload=SIZE@ADDR` (hexadecimal, [`PAYLOAD_CMDLINE_PARAM`]); the e820 map
//! lists the range as reserved, so Linux leaves it alone and `/dev/mem`
//! maps it (a reserved range above 1 MiB is not "busy", which
//! `IO_STRICT_DEVMEM` allows). A dotted parameter is not passed to init.

use std::os::fd::AsRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

use crate::{ReservedRegion, VmSpec, VmmError};

/// Where the region starts: the bottom of the PCI hole, above any RAM the
/// `pc` layout keeps below 4 GiB (at most 3.5 GiB) and below the IOAPIC.
pub const KVM_PAYLOAD_GPA: u64 = 0xe000_0000;
/// The largest region that fits below the IOAPIC (0xfec0_0000).
pub const KVM_PAYLOAD_MAX: u64 = 256 << 20;
/// The command-line parameter that tells the guest where the region is.
pub const PAYLOAD_CMDLINE_PARAM: &str = "ktstr.payload";

/// The command-line word for `spec`'s region, if it has one.
pub(crate) fn cmdline_word(spec: &VmSpec) -> Option<String> {
    (spec.payload_bytes != 0).then(|| {
        format!(
            "{PAYLOAD_CMDLINE_PARAM}={:#x}@{KVM_PAYLOAD_GPA:#x}",
            spec.payload_bytes
        )
    })
}

/// The spec's reserved ranges plus the payload region.
pub(crate) fn reserved(spec: &VmSpec) -> Vec<ReservedRegion> {
    let mut r = spec.reserved.clone();
    if spec.payload_bytes != 0 {
        r.push(ReservedRegion {
            gpa: KVM_PAYLOAD_GPA,
            size: spec.payload_bytes,
        });
    }
    r
}

/// The region's memory, mapped in the host.
#[derive(Debug)]
pub(crate) struct PayloadRegion {
    _file: std::fs::File,
    host: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only unmapped by its Drop;
// the raw pointer is not aliased by Rust references.
unsafe impl Send for PayloadRegion {}
// SAFETY: as above; shared access only hands the address to KVM.
unsafe impl Sync for PayloadRegion {}

impl PayloadRegion {
    /// A region of `spec.payload_bytes` holding `content` at its start.
    pub(crate) fn new(spec: &VmSpec, content: &[u8]) -> Result<Self, VmmError> {
        let bytes = spec.payload_bytes;
        if bytes > KVM_PAYLOAD_MAX {
            return Err(VmmError::InvalidSpec(format!(
                "payload region of {bytes} bytes: the own KVM VMM places it below 4 GiB, \
                 at most {} MiB",
                KVM_PAYLOAD_MAX >> 20
            )));
        }
        if content.len() as u64 > bytes {
            return Err(VmmError::InvalidSpec(format!(
                "a payload of {} bytes does not fit the {bytes}-byte payload region",
                content.len()
            )));
        }
        let file = crate::memory::memfd("ktstr-payload", bytes)?;
        use std::os::unix::fs::FileExt;
        file.write_all_at(content, 0)
            .map_err(|e| VmmError::Memory(format!("writing the payload: {e}")))?;
        let len = bytes as usize;
        // SAFETY: a fresh shared mapping of `len` bytes of a memfd of that
        // size; the kernel picks the address.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(VmmError::os("mapping the payload region"));
        }
        Ok(PayloadRegion {
            _file: file,
            host: host.cast(),
            len,
        })
    }

    /// Gives the region to the guest as memory slot `slot`.
    pub(crate) fn register(&self, vm: &VmFd, slot: u32) -> Result<(), VmmError> {
        let mr = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: KVM_PAYLOAD_GPA,
            memory_size: self.len as u64,
            userspace_addr: self.host as u64,
        };
        // SAFETY: the mapping is live for `memory_size` bytes and outlives the
        // VM (KvmVm drops its VmFd before the region).
        unsafe { vm.set_user_memory_region(mr) }
            .map_err(crate::kvm::kvm_err("KVM_SET_USER_MEMORY_REGION"))
    }
}

impl Drop for PayloadRegion {
    fn drop(&mut self) {
        // SAFETY: `host`/`len` is the mapping made in `new`, unmapped once here.
        unsafe { libc::munmap(self.host.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_on_the_command_line_and_reserved() {
        let mut spec = VmSpec::new("vmlinux", "1n1l1c1t".parse().expect("topology"));
        assert_eq!(cmdline_word(&spec), None);
        assert!(reserved(&spec).is_empty());
        spec.payload_bytes = 64 << 20;
        assert_eq!(
            cmdline_word(&spec).as_deref(),
            Some("ktstr.payload=0x4000000@0xe0000000")
        );
        assert_eq!(
            reserved(&spec),
            [ReservedRegion {
                gpa: KVM_PAYLOAD_GPA,
                size: 64 << 20
            }]
        );
        const {
            assert!(
                KVM_PAYLOAD_GPA + KVM_PAYLOAD_MAX <= 0xfec0_0000,
                "below the IOAPIC"
            )
        };
    }

    #[test]
    fn oversized_regions_and_payloads_are_refused() {
        let mut spec = VmSpec::new("vmlinux", "1n1l1c1t".parse().expect("topology"));
        spec.payload_bytes = 512 << 20;
        let e = PayloadRegion::new(&spec, b"x")
            .expect_err("an error")
            .to_string();
        assert!(e.contains("at most 256 MiB"), "{e}");
        spec.payload_bytes = 1 << 20;
        let e = PayloadRegion::new(&spec, &vec![1; (1 << 20) + 1])
            .expect_err("an error")
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
        PayloadRegion::new(&spec, b"fits").expect("a payload that fits");
    }
}
