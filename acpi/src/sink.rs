//! Where tables are written: guest memory in the VMM, a buffer in tests.

use alloc::vec::Vec;

/// Byte-addressed memory the tables are written into, at guest physical addresses.
///
/// The VMM implements it over guest RAM; tests use [`VecSink`].
pub trait AcpiSink {
    /// Why a write failed (e.g. the range is not backed by guest RAM).
    type Error;

    /// Writes `bytes` at guest physical address `addr`.
    fn write_at(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// A growable buffer standing for guest memory from `base` upwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VecSink {
    base: u64,
    bytes: Vec<u8>,
}

/// A write below a [`VecSink`]'s base address, or past what a `Vec` can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("write of {len} bytes at {addr:#x} is outside the buffer starting at {base:#x}")]
pub struct OutOfRange {
    /// Address of the write.
    pub addr: u64,
    /// Its length.
    pub len: usize,
    /// First address the buffer holds.
    pub base: u64,
}

impl VecSink {
    /// An empty buffer whose first byte stands for guest address `base`.
    pub fn new(base: u64) -> Self {
        Self {
            base,
            bytes: Vec::new(),
        }
    }

    /// Guest address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Everything written so far (gaps are zero).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `len` bytes at guest address `addr`, if written.
    pub fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

impl AcpiSink for VecSink {
    type Error = OutOfRange;

    fn write_at(&mut self, addr: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let err = OutOfRange {
            addr,
            len: bytes.len(),
            base: self.base,
        };
        let start = addr
            .checked_sub(self.base)
            .and_then(|off| usize::try_from(off).ok())
            .ok_or(err)?;
        let end = start.checked_add(bytes.len()).ok_or(err)?;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[start..end].copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_grow_and_read_back() {
        let mut sink = VecSink::new(0x1000);
        sink.write_at(0x1004, &[1, 2]).expect("inside");
        assert_eq!(sink.bytes(), &[0, 0, 0, 0, 1, 2]);
        assert_eq!(sink.read(0x1004, 2), Some(&[1, 2][..]));
        assert_eq!(sink.read(0x1005, 2), None);
        assert!(sink.write_at(0xfff, &[1]).is_err());
        assert_eq!(sink.read(0, 1), None);
    }
}
