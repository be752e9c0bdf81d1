//! The host's end of the host-guest channel: the channel region seen through
//! the backend's mapping of guest RAM.

use ktstr_ops::channel::ChannelMem;
use ktstr_vmm::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

/// The channel region at `base` in guest RAM.
#[derive(Debug)]
pub(crate) struct HostChannel {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) base: u64,
}

impl ChannelMem for HostChannel {
    fn read(&self, off: u64, buf: &mut [u8]) {
        if self
            .mem
            .read_slice(buf, GuestAddress(self.base + off))
            .is_err()
        {
            buf.fill(0);
        }
    }
    fn write(&self, off: u64, buf: &[u8]) {
        let _ = self.mem.write_slice(buf, GuestAddress(self.base + off));
    }
    fn load_u64(&self, off: u64) -> u64 {
        self.mem
            .load(
                GuestAddress(self.base + off),
                std::sync::atomic::Ordering::Acquire,
            )
            .unwrap_or(0)
    }
    fn store_u64(&self, off: u64, v: u64) {
        let _ = self.mem.store(
            v,
            GuestAddress(self.base + off),
            std::sync::atomic::Ordering::Release,
        );
    }
}
