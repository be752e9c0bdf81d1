//! Where the VMM puts things in guest physical memory, and the e820 map that
//! tells the guest which of it is RAM.
//!
//! Everything below 1 MiB follows the PC conventions Linux expects (the zero page
//! and command line in low memory, the ACPI tables in the BIOS area that is
//! reserved); the kernel loads at 1 MiB.

use crate::{RamRegion, ReservedRegion};

/// The GDT of the boot vCPU (5 entries).
pub(crate) const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the kernel installs its own before enabling interrupts.
pub(crate) const IDT_ADDR: u64 = 0x540;
/// PVH `hvm_start_info`, its module list and memory map.
pub(crate) const PVH_INFO_ADDR: u64 = 0x6000;
pub(crate) const PVH_MODLIST_ADDR: u64 = 0x6100;
pub(crate) const PVH_MEMMAP_ADDR: u64 = 0x6200;
/// Room for the PVH memory map up to the zero page.
pub(crate) const PVH_MEMMAP_MAX: usize = (ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) as usize / 24;
/// The bzImage `boot_params` ("zero page").
pub(crate) const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The boot stack of the 64-bit entry, growing down from below the page tables.
pub(crate) const BOOT_STACK: u64 = 0x8ff0;
/// Identity page tables of the 64-bit entry: PML4, PDPT, then four PDs mapping
/// the first 4 GiB with 2 MiB pages.
pub(crate) const PML4_ADDR: u64 = 0x9000;
pub(crate) const PDPT_ADDR: u64 = 0xa000;
pub(crate) const PD_ADDR: u64 = 0xb000;
/// The kernel command line (x86 `COMMAND_LINE_SIZE` is 2048; room for more).
pub(crate) const CMDLINE_ADDR: u64 = 0x20000;
pub(crate) const CMDLINE_MAX: usize = 4096;
/// Start of the EBDA, the end of conventional RAM (the zero page's e820 starts here).
pub(crate) const EBDA_START: u64 = 0x9fc00;
/// Where the kernel loads, and the end of the reserved BIOS area.
pub(crate) const HIMEM_START: u64 = 0x10_0000;

/// e820 types (ACPI 6.5 Table 15.4).
pub(crate) const E820_RAM: u32 = 1;
pub(crate) const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct E820Entry {
    pub(crate) addr: u64,
    pub(crate) size: u64,
    pub(crate) kind: u32,
}

impl E820Entry {
    pub(crate) fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The e820 map of a VM: each RAM region (one or two per NUMA node), the
/// EBDA/BIOS area below 1 MiB reserved (the ACPI tables live there), and each
/// `reserved` range (the host-guest channel) cut out of RAM and listed as
/// reserved. Sorted by address.
pub(crate) fn e820_map(ram: &[RamRegion], reserved: &[ReservedRegion]) -> Vec<E820Entry> {
    let mut ram_entries = Vec::new();
    for r in ram {
        let (start, end) = (r.gpa, r.gpa + r.size);
        if start < HIMEM_START {
            if start < EBDA_START {
                ram_entries.push((start, end.min(EBDA_START)));
            }
            if end > HIMEM_START {
                ram_entries.push((HIMEM_START, end));
            }
        } else {
            ram_entries.push((start, end));
        }
    }
    let mut out: Vec<E820Entry> = Vec::new();
    for (start, end) in ram_entries {
        // Subtract every reserved range from [start, end).
        let mut pieces = vec![(start, end)];
        for res in reserved {
            let (rs, re) = (res.gpa, res.gpa + res.size);
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| {
                    let mut keep = Vec::new();
                    if rs >= e || re <= s {
                        keep.push((s, e));
                    } else {
                        if s < rs {
                            keep.push((s, rs));
                        }
                        if re < e {
                            keep.push((re, e));
                        }
                    }
                    keep
                })
                .collect();
        }
        out.extend(pieces.into_iter().map(|(s, e)| E820Entry {
            addr: s,
            size: e - s,
            kind: E820_RAM,
        }));
    }
    if ram.iter().any(|r| r.gpa < EBDA_START) {
        out.push(E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        });
    }
    out.extend(reserved.iter().map(|r| E820Entry {
        addr: r.gpa,
        size: r.size,
        kind: E820_RESERVED,
    }));
    out.sort_by_key(|e| e.addr);
    out
}

/// Where the initrd goes: as high as possible in the RAM below `max_end` (the
/// kernel's `initrd_addr_max` + 1, or 4 GiB), page aligned, above `min_start`
/// (the kernel's end); `None` if no RAM entry has room.
pub(crate) fn initrd_address(
    e820: &[E820Entry],
    size: u64,
    min_start: u64,
    max_end: u64,
) -> Option<u64> {
    const PAGE: u64 = 4096;
    e820.iter()
        .rev()
        .filter(|e| e.kind == E820_RAM)
        .find_map(|e| {
            let end = e.end().min(max_end);
            let start = end.checked_sub(size)? & !(PAGE - 1);
            (start >= e.addr && start >= min_start).then_some(start)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pc_ram_layout;

    const MIB: u64 = 1 << 20;

    #[test]
    fn two_nodes_with_a_channel_region() {
        let ram = pc_ram_layout(&[64 * MIB, 64 * MIB]);
        let channel = ReservedRegion {
            gpa: 120 * MIB,
            size: 4 * MIB,
        };
        let map = e820_map(&ram, &[channel]);
        let want = [
            (0, EBDA_START, E820_RAM),
            (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
            (HIMEM_START, 64 * MIB - HIMEM_START, E820_RAM),
            (64 * MIB, 56 * MIB, E820_RAM),
            (120 * MIB, 4 * MIB, E820_RESERVED),
            (124 * MIB, 4 * MIB, E820_RAM),
        ];
        let got: Vec<_> = map.iter().map(|e| (e.addr, e.size, e.kind)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ram_above_the_hole_is_listed() {
        let ram = pc_ram_layout(&[2 << 30, 2 << 30]);
        let map = e820_map(&ram, &[]);
        let last = map.last().expect("entries");
        assert_eq!(
            (last.addr, last.size, last.kind),
            (1 << 32, 1 << 30, E820_RAM)
        );
        let ram_total: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram_total, (4 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn initrd_goes_high_and_avoids_reserved() {
        let ram = pc_ram_layout(&[64 * MIB]);
        let channel = ReservedRegion {
            gpa: 60 * MIB,
            size: 4 * MIB,
        };
        let map = e820_map(&ram, &[channel]);
        let at = initrd_address(&map, 3 * MIB + 5, 2 * MIB, 1 << 32).expect("room");
        assert_eq!(at, (60 * MIB - (3 * MIB + 5)) & !4095);
        assert!(at + 3 * MIB + 5 <= 60 * MIB);
        assert_eq!(initrd_address(&map, 70 * MIB, 2 * MIB, 1 << 32), None);
    }
}
