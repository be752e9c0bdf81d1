//! AML for the DSDT: 16550 UARTs as ACPI devices (what ktstr's VMM adds).
//!
//! The FADT describes a hardware-reduced ACPI machine, so Linux assumes no
//! legacy PIC and pre-allocates no ISA interrupts: the 8250 driver's built-in
//! COM1/COM2 (irq 4/3) then fail to get their interrupt, and everything that
//! writes to the console through the tty layer (interrupt-driven transmit:
//! all of userland) is lost while printk (polled) still arrives. Described
//! as `PNP0501` devices with their I/O range and IRQ, the ports are set up by
//! 8250_pnp with the interrupt mapped through the IOAPIC, like on a PC.
//!
//! Encodings: ACPI 6.5 §20 (AML) and §6.4 (resource descriptors).

use alloc::vec;
use alloc::vec::Vec;

/// One UART as an ACPI device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialPort {
    /// The device's 4-character ACPI name, e.g. `COM1`.
    pub name: [u8; 4],
    /// `_UID`, distinct per port.
    pub uid: u8,
    /// First I/O port of its 8 registers.
    pub base: u16,
    /// Its ISA IRQ (edge, active high).
    pub irq: u8,
}

const SCOPE_OP: u8 = 0x10;
const NAME_OP: u8 = 0x08;
const BUFFER_OP: u8 = 0x11;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const BYTE_PREFIX: u8 = 0x0a;
const DWORD_PREFIX: u8 = 0x0c;
const ROOT_CHAR: u8 = b'\\';
/// `EISAID("PNP0501")`: a 16550A-compatible UART (compressed EISA id, §19.6.37).
const EISA_PNP0501: u32 = 0x0105_d041;
/// Small resource descriptors (§6.4.2): I/O port (8 bytes), IRQ without
/// flags (3 bytes), end tag with a zero checksum ("checksum ignored").
const IO_DESCRIPTOR: u8 = 0x47;
const IO_DECODE16: u8 = 0x01;
const IRQ_NO_FLAGS: u8 = 0x22;
const END_TAG: [u8; 2] = [0x79, 0x00];

/// `PkgLength` (§20.2.4) of a package whose body (after the PkgLength) is
/// `body` bytes long: the encoded length counts its own bytes.
pub fn pkg_length(body: usize) -> Vec<u8> {
    if body < 63 {
        return vec![(body + 1) as u8];
    }
    let (n, total) = if body + 2 < 1 << 12 {
        (2, body + 2)
    } else if body + 3 < 1 << 20 {
        (3, body + 3)
    } else {
        (4, body + 4)
    };
    let mut out = vec![(((n - 1) as u8) << 6) | (total & 0xf) as u8];
    for i in 1..n {
        out.push((total >> (4 + 8 * (i - 1))) as u8);
    }
    out
}

/// `op` + PkgLength + `body`.
fn package(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = op.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// `Name(name, value)` where `value` is already encoded.
fn name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut out = vec![NAME_OP];
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out
}

/// The resource template of one UART: its 8 I/O ports and its IRQ.
fn crs(port: &SerialPort) -> Vec<u8> {
    let [lo, hi] = port.base.to_le_bytes();
    let mask = 1u16 << port.irq;
    let mut res = vec![IO_DESCRIPTOR, IO_DECODE16, lo, hi, lo, hi, 1, 8];
    res.push(IRQ_NO_FLAGS);
    res.extend_from_slice(&mask.to_le_bytes());
    res.extend_from_slice(&END_TAG);
    let mut body = vec![BYTE_PREFIX, res.len() as u8];
    body.extend(res);
    package(&[BUFFER_OP], &body)
}

fn device(port: &SerialPort) -> Vec<u8> {
    let mut body = port.name.to_vec();
    let mut hid = vec![DWORD_PREFIX];
    hid.extend_from_slice(&EISA_PNP0501.to_le_bytes());
    body.extend(name(b"_HID", &hid));
    body.extend(name(b"_UID", &[BYTE_PREFIX, port.uid]));
    body.extend(name(b"_CRS", &crs(port)));
    package(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Scope(\_SB) { Device(COMn) {...} ... }` for `ports`.
pub fn serial_ports(ports: &[SerialPort]) -> Vec<u8> {
    let mut body = vec![ROOT_CHAR];
    body.extend_from_slice(b"_SB_");
    for p in ports {
        body.extend(device(p));
    }
    package(&[SCOPE_OP], &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_counts_its_own_bytes() {
        assert_eq!(pkg_length(0), [1]);
        assert_eq!(pkg_length(62), [63]);
        // 63 body bytes + 2 length bytes = 65 = 0x41.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        assert_eq!(pkg_length(0xffd), [0x4f, 0xff]);
        assert_eq!(pkg_length(0xffe), [0x81, 0x00, 0x01]);
    }

    #[test]
    fn one_port_encodes_as_iasl_would() {
        let aml = serial_ports(&[SerialPort {
            name: *b"COM1",
            uid: 1,
            base: 0x3f8,
            irq: 4,
        }]);
        // The _CRS buffer: IO(Decode16, 0x3F8, 0x3F8, 1, 8), IRQNoFlags(){4}, end.
        let crs = [
            0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10,
            0x00, 0x79, 0x00,
        ];
        assert!(aml.windows(crs.len()).any(|w| w == crs), "{aml:02x?}");
        assert_eq!(&aml[..2], &[SCOPE_OP, aml.len() as u8 - 1]);
        assert_eq!(&aml[2..7], b"\\_SB_");
        assert_eq!(&aml[7..9], &[EXT_OP_PREFIX, DEVICE_OP]);
    }
}
