//! RSDP and XSDT: where the guest starts looking, and the list of tables
//! (ACPI 6.5 §5.2.5, §5.2.8).

use alloc::vec::Vec;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::sdt::{OEM_ID, Sdt, checksum};

/// Root System Description Pointer, revision 2 (§5.2.5.3, Table 5.3), 36 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct Rsdp {
    signature: [u8; 8],
    checksum: u8,
    oem_id: [u8; 6],
    revision: u8,
    rsdt_address: U32,
    length: U32,
    xsdt_address: U64,
    extended_checksum: u8,
    reserved: [u8; 3],
}

/// Bytes the first (ACPI 1.0) checksum covers.
const RSDP_V1_LEN: usize = 20;
/// Offsets of the two checksums.
const CHECKSUM_OFFSET: usize = 8;
const EXTENDED_CHECKSUM_OFFSET: usize = 32;
pub(crate) const RSDP_LEN: usize = core::mem::size_of::<Rsdp>();

/// Builds the RSDP pointing at the XSDT (no RSDT: revision 2 readers use the XSDT).
pub(crate) fn build_rsdp(xsdt_address: u64) -> Vec<u8> {
    let rsdp = Rsdp {
        signature: *b"RSD PTR ",
        checksum: 0,
        oem_id: OEM_ID,
        revision: 2,
        rsdt_address: U32::ZERO,
        length: U32::new(RSDP_LEN as u32),
        xsdt_address: U64::new(xsdt_address),
        extended_checksum: 0,
        reserved: [0; 3],
    };
    let mut bytes = rsdp.as_bytes().to_vec();
    bytes[CHECKSUM_OFFSET] = checksum(&bytes[..RSDP_V1_LEN]);
    bytes[EXTENDED_CHECKSUM_OFFSET] = checksum(&bytes);
    bytes
}

/// Builds the XSDT listing the tables at `addresses`.
pub(crate) fn build_xsdt(addresses: &[u64]) -> Vec<u8> {
    let mut sdt = Sdt::new(*b"XSDT", 1);
    for address in addresses {
        sdt.push(&U64::new(*address));
    }
    sdt.finish()
}

/// XSDT length for `entries` tables.
pub(crate) const fn xsdt_len(entries: usize) -> usize {
    crate::sdt::HEADER_LEN + 8 * entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn both_rsdp_checksums_hold() {
        let rsdp = build_rsdp(0xdead_beef_0000);
        assert_eq!(rsdp.len(), 36);
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        assert_eq!(&rsdp[24..32], &0xdead_beef_0000u64.to_le_bytes());
    }

    #[test]
    fn xsdt_length_matches() {
        assert_eq!(build_xsdt(&[1, 2, 3]).len(), xsdt_len(3));
    }
}
