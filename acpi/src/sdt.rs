//! The header every System Description Table starts with, and checksums.

use alloc::vec::Vec;

use zerocopy::little_endian::U32;
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

/// OEM id written in every table (ACPI 6.5 §5.2.6, 6 bytes).
pub(crate) const OEM_ID: [u8; 6] = *b"KTSTR ";
/// OEM table id (8 bytes).
pub(crate) const OEM_TABLE_ID: [u8; 8] = *b"KTSTRVM ";
/// Creator id (4 bytes) and revision.
pub(crate) const CREATOR_ID: [u8; 4] = *b"KTST";
pub(crate) const CREATOR_REVISION: u32 = 1;

/// System Description Table header (ACPI 6.5 §5.2.6, Table 5.4), 36 bytes.
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub(crate) struct SdtHeader {
    signature: [u8; 4],
    length: U32,
    revision: u8,
    checksum: u8,
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: U32,
    creator_id: [u8; 4],
    creator_revision: U32,
}

/// Offset of the checksum byte in an SDT header.
const CHECKSUM_OFFSET: usize = 9;
/// Offset of the length field in an SDT header.
const LENGTH_OFFSET: usize = 4;
pub(crate) const HEADER_LEN: usize = core::mem::size_of::<SdtHeader>();

/// Byte that makes `bytes` sum to zero (mod 256) when stored in a zeroed checksum field.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// The length byte of a subtable (MADT, SRAT structures are a few bytes long).
pub(crate) fn len_of<T>() -> u8 {
    u8::try_from(core::mem::size_of::<T>()).expect("ACPI subtables are shorter than 256 bytes")
}

/// A table under construction: header first, then the body appended piece by piece.
pub(crate) struct Sdt {
    bytes: Vec<u8>,
}

impl Sdt {
    /// Starts a table with its signature and revision; length and checksum come in
    /// [`Sdt::finish`].
    pub(crate) fn new(signature: [u8; 4], revision: u8) -> Self {
        let header = SdtHeader {
            signature,
            length: U32::ZERO,
            revision,
            checksum: 0,
            oem_id: OEM_ID,
            oem_table_id: OEM_TABLE_ID,
            oem_revision: U32::new(1),
            creator_id: CREATOR_ID,
            creator_revision: U32::new(CREATOR_REVISION),
        };
        Self {
            bytes: header.as_bytes().to_vec(),
        }
    }

    /// Appends a structure.
    pub(crate) fn push<T: IntoBytes + Immutable + ?Sized>(&mut self, item: &T) {
        self.bytes.extend_from_slice(item.as_bytes());
    }

    /// Appends raw bytes.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Writes the length and checksum and returns the table.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        // The tables here are far below 4 GiB; a table that is not cannot be built
        // from a topology of at most MAX_CPUS CPUs and MAX_NUMA_NODES nodes.
        let len = u32::try_from(self.bytes.len()).expect("an ACPI table fits in u32");
        self.bytes[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
        self.bytes[CHECKSUM_OFFSET] = 0;
        self.bytes[CHECKSUM_OFFSET] = checksum(&self.bytes);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_36_bytes() {
        assert_eq!(HEADER_LEN, 36);
    }

    #[test]
    fn finished_table_sums_to_zero() {
        let mut sdt = Sdt::new(*b"TEST", 1);
        sdt.extend(&[1, 2, 3, 250]);
        let table = sdt.finish();
        assert_eq!(table.len(), 40);
        assert_eq!(&table[4..8], &40u32.to_le_bytes());
        assert_eq!(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    }
}
