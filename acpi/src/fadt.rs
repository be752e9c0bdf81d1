//! FADT: fixed hardware description, here a hardware-reduced ACPI machine, and the
//! DSDT it points to (ACPI 6.5 §5.2.9, §5.2.11.1).

use alloc::vec::Vec;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::sdt::Sdt;

/// An I/O port register, described to the guest as a Generic Address Structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPort {
    /// Port number.
    pub port: u16,
}

/// What the FADT tells the guest about the machine beyond "hardware-reduced ACPI".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FadtConfig {
    /// Writing [`FadtConfig::reset_value`] here resets the machine (RESET_REG).
    pub reset_register: Option<IoPort>,
    /// Value the guest writes to the reset register.
    pub reset_value: u8,
    /// Sleep control register: the guest writes `SLP_TYP << 2 | SLP_EN` (bit 5) here
    /// to power off, with SLP_TYP from the DSDT's `\_S5` (§4.8.3.7).
    pub sleep_control: Option<IoPort>,
    /// Sleep status register (§4.8.3.8).
    pub sleep_status: Option<IoPort>,
    /// IA-PC boot architecture flags (Table 5.11); see the `BOOT_ARCH_*` constants.
    pub iapc_boot_arch: u16,
}

/// IAPC_BOOT_ARCH: the machine has legacy ISA devices (Table 5.11, bit 0).
pub const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
/// IAPC_BOOT_ARCH: an 8042 keyboard controller is present (bit 1).
pub const BOOT_ARCH_8042: u16 = 1 << 1;
/// IAPC_BOOT_ARCH: VGA is not present (bit 2).
pub const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IAPC_BOOT_ARCH: the CMOS RTC is not present (bit 5).
pub const BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

impl Default for FadtConfig {
    /// No reset or sleep registers, no VGA; an 8042 is not announced so the
    /// guest does not probe for one.
    fn default() -> Self {
        Self {
            reset_register: None,
            reset_value: 0,
            sleep_control: None,
            sleep_status: None,
            iapc_boot_arch: BOOT_ARCH_VGA_NOT_PRESENT,
        }
    }
}

/// Generic Address Structure (§5.2.3.2), 12 bytes.
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct Gas {
    address_space: u8,
    bit_width: u8,
    bit_offset: u8,
    access_size: u8,
    address: U64,
}

/// Address space id of system I/O (Table 5.2); access size 1 = byte access.
const SPACE_SYSTEM_IO: u8 = 1;
const ACCESS_BYTE: u8 = 1;

impl Gas {
    fn io_byte(port: Option<IoPort>) -> Self {
        match port {
            Some(IoPort { port }) => Gas {
                address_space: SPACE_SYSTEM_IO,
                bit_width: 8,
                bit_offset: 0,
                access_size: ACCESS_BYTE,
                address: U64::new(u64::from(port)),
            },
            None => Gas::default(),
        }
    }
}

/// FADT fields after the header (Table 5.9), up to the hypervisor vendor identity:
/// 276 bytes with the header.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct FadtFields {
    firmware_ctrl: U32,
    dsdt: U32,
    reserved1: u8,
    preferred_pm_profile: u8,
    sci_int: U16,
    smi_cmd: U32,
    acpi_enable: u8,
    acpi_disable: u8,
    s4bios_req: u8,
    pstate_cnt: u8,
    /// PM1a_EVT_BLK through GPE1_BLK: 8 legacy 32-bit block addresses, unused when
    /// hardware-reduced.
    legacy_blocks: [U32; 8],
    /// PM1_EVT_LEN through CST_CNT: 8 legacy length bytes.
    legacy_lengths: [u8; 8],
    p_lvl2_lat: U16,
    p_lvl3_lat: U16,
    flush_size: U16,
    flush_stride: U16,
    duty_offset: u8,
    duty_width: u8,
    day_alrm: u8,
    mon_alrm: u8,
    century: u8,
    iapc_boot_arch: U16,
    reserved2: u8,
    flags: U32,
    reset_reg: Gas,
    reset_value: u8,
    arm_boot_arch: U16,
    minor_version: u8,
    x_firmware_ctrl: U64,
    x_dsdt: U64,
    /// X_PM1a_EVT_BLK through X_GPE1_BLK: 8 legacy extended blocks.
    x_legacy_blocks: [Gas; 8],
    sleep_control_reg: Gas,
    sleep_status_reg: Gas,
    hypervisor_vendor_identity: U64,
}

/// FADT length, as the revision-6 table lays it out (Table 5.9).
pub(crate) const FADT_LEN: usize = 276;

/// FADT Flags (Table 5.10).
const FLAG_PWR_BUTTON: u32 = 1 << 4; // no fixed-feature power button
const FLAG_SLP_BUTTON: u32 = 1 << 5; // no fixed-feature sleep button
const FLAG_RESET_REG_SUP: u32 = 1 << 10;
const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// Builds the FADT (revision 6.5) pointing at the DSDT at `dsdt_address`.
pub(crate) fn build_fadt(config: &FadtConfig, dsdt_address: u64) -> Vec<u8> {
    let mut flags = FLAG_PWR_BUTTON | FLAG_SLP_BUTTON | FLAG_HW_REDUCED_ACPI;
    if config.reset_register.is_some() {
        flags |= FLAG_RESET_REG_SUP;
    }
    let mut sdt = Sdt::new(*b"FACP", 6);
    sdt.push(&FadtFields {
        firmware_ctrl: U32::ZERO, // no FACS: hardware-reduced (§5.2.10)
        dsdt: U32::ZERO,          // X_DSDT is used instead (§5.2.9)
        reserved1: 0,
        preferred_pm_profile: 0, // unspecified
        sci_int: U16::ZERO,
        smi_cmd: U32::ZERO,
        acpi_enable: 0,
        acpi_disable: 0,
        s4bios_req: 0,
        pstate_cnt: 0,
        legacy_blocks: [U32::ZERO; 8],
        legacy_lengths: [0; 8],
        p_lvl2_lat: U16::new(101),  // > 100: C2 not supported (Table 5.9)
        p_lvl3_lat: U16::new(1001), // > 1000: C3 not supported
        flush_size: U16::ZERO,
        flush_stride: U16::ZERO,
        duty_offset: 0,
        duty_width: 0,
        day_alrm: 0,
        mon_alrm: 0,
        century: 0,
        iapc_boot_arch: U16::new(config.iapc_boot_arch),
        reserved2: 0,
        flags: U32::new(flags),
        reset_reg: Gas::io_byte(config.reset_register),
        reset_value: config.reset_value,
        arm_boot_arch: U16::ZERO,
        minor_version: 5,
        x_firmware_ctrl: U64::ZERO,
        x_dsdt: U64::new(dsdt_address),
        x_legacy_blocks: [Gas::default(); 8],
        sleep_control_reg: Gas::io_byte(config.sleep_control),
        sleep_status_reg: Gas::io_byte(config.sleep_status),
        hypervisor_vendor_identity: U64::ZERO,
    });
    sdt.finish()
}

/// AML of `Name (\_S5, Package (2) { 5, 0 })`: the SLP_TYP values for soft-off
/// (§7.4.2.5), so a guest writes 5 << 2 | SLP_EN to the sleep control register.
/// NameOp, NameString, PackageOp, PkgLength, NumElements, BytePrefix 5, ZeroOp
/// (ACPI 6.5 §20.2.5.2, §20.2.5.4, §20.2.3).
const S5_AML: [u8; 11] = [
    0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00,
];

/// SLP_TYP of `\_S5` in the DSDT.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Builds the DSDT: `\_S5` and whatever AML the VMM adds for its devices.
pub(crate) fn build_dsdt(extra_aml: &[u8]) -> Vec<u8> {
    // Revision 2: integers are 64 bits wide (§5.2.11.1).
    let mut sdt = Sdt::new(*b"DSDT", 2);
    sdt.extend(&S5_AML);
    sdt.extend(extra_aml);
    sdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fadt_is_276_bytes() {
        assert_eq!(core::mem::size_of::<Gas>(), 12);
        assert_eq!(
            crate::sdt::HEADER_LEN + core::mem::size_of::<FadtFields>(),
            FADT_LEN
        );
        let fadt = build_fadt(&FadtConfig::default(), 0x1234);
        assert_eq!(fadt.len(), FADT_LEN);
        // X_DSDT at offset 140 (Table 5.9).
        assert_eq!(&fadt[140..148], &0x1234u64.to_le_bytes());
    }

    #[test]
    fn s5_sleep_type_is_in_the_aml() {
        assert_eq!(S5_AML[9], S5_SLEEP_TYPE);
    }
}
