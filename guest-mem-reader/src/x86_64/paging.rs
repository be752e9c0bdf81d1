//! 4- and 5-level x86-64 page-table walks (Intel SDM vol. 3, 4.5 "4-level and 5-level
//! paging"), reading the tables from guest physical memory.
//!
//! Only the present bit (0), the page-size bit (7) and the address bits (12..=51) are used:
//! the monitor reads kernel memory, so user/supervisor and write permissions do not matter.
//! A not-present entry, an address that is not canonical, or a table outside guest RAM is an
//! error value; the walk has at most five steps, so garbage cannot make it loop.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::error::{Error, Result};

/// Paging depth: CR4.LA57 clear (4 levels, 48-bit addresses) or set (5 levels, 57-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PagingLevels {
    /// PML4 root.
    Four,
    /// PML5 root.
    Five,
}

/// A page-table root, as the caller read it from a vCPU (or the guest reported it): CR3's
/// value and the paging depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageTable {
    /// CR3. The PCID bits (0..=11) and bit 63 (no-flush) are ignored.
    pub cr3: u64,
    /// Paging depth.
    pub levels: PagingLevels,
}

impl PageTable {
    /// A root from CR3 and the depth.
    pub fn new(cr3: u64, levels: PagingLevels) -> Self {
        PageTable { cr3, levels }
    }
}

/// Bits 12..=51 of an entry or CR3: the next table's (or the page's) physical address.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const LEVEL_NAMES: [&str; 5] = ["PML5", "PML4", "PDPT", "PD", "PT"];

/// Translate `va` through `pt`: (guest physical address, bytes from it to the end of the page
/// that maps it — 4 KiB, 2 MiB or 1 GiB).
pub(crate) fn walk<M: GuestMemory + ?Sized>(mem: &M, pt: PageTable, va: u64) -> Result<(u64, u64)> {
    let (first, va_bits) = match pt.levels {
        PagingLevels::Four => (1, 48),
        PagingLevels::Five => (0, 57),
    };
    // Canonical: bits va_bits-1..=63 all equal.
    let top = (va as i64) >> (va_bits - 1);
    if top != 0 && top != -1 {
        return Err(Error::NonCanonical { va });
    }
    let mut table = pt.cr3 & ADDR_MASK;
    for (level, name) in LEVEL_NAMES.iter().enumerate().skip(first) {
        // PML5 indexes bits 48..=56, PML4 39..=47, PDPT 30..=38, PD 21..=29, PT 12..=20.
        let shift = 12 + 9 * (4 - level) as u32;
        let index = (va >> shift) & 0x1ff;
        let entry_pa = table + index * 8;
        let entry: u64 = mem
            .read_obj(GuestAddress(entry_pa))
            .map_err(|_| Error::PhysRead {
                addr: entry_pa,
                len: 8,
            })?;
        if entry & PRESENT == 0 {
            return Err(Error::NotMapped { va, level: name });
        }
        // PS in a PDPT (1 GiB) or PD (2 MiB) entry maps a large page; at the PT level it is
        // PAT, and above the PDPT it is reserved.
        let leaf = level == 4 || (entry & PAGE_SIZE_BIT != 0 && (level == 2 || level == 3));
        if leaf {
            let page = 1u64 << shift;
            let offset = va & (page - 1);
            let base = entry & ADDR_MASK & !(page - 1);
            return Ok((base | offset, page - offset));
        }
        table = entry & ADDR_MASK;
    }
    // The loop always returns at the PT level.
    Err(Error::NotMapped { va, level: "PT" })
}

/// Bytes of `[start, end)` that `pt` maps (present leaf entries, of any page size), walking
/// only the tables that exist. At most `budget` table entries are read; past it the walk
/// stops with [`Error::Corrupt`] (garbage tables cannot make it run long).
pub(crate) fn mapped_bytes<M: GuestMemory + ?Sized>(
    mem: &M,
    pt: PageTable,
    start: u64,
    end: u64,
    budget: u64,
) -> Result<u64> {
    let (first, va_bits) = match pt.levels {
        PagingLevels::Four => (1, 48),
        PagingLevels::Five => (0, 57),
    };
    for va in [start, end.saturating_sub(1)] {
        let top = (va as i64) >> (va_bits - 1);
        if top != 0 && top != -1 {
            return Err(Error::NonCanonical { va });
        }
    }
    let mut left = budget;
    let mut total = 0;
    // (table's physical address, level, the virtual address its first entry maps)
    let va_mask = if va_bits == 64 {
        u64::MAX
    } else {
        (1u64 << va_bits) - 1
    };
    let mut stack = vec![(pt.cr3 & ADDR_MASK, first, start & !va_mask)];
    while let Some((table, level, base)) = stack.pop() {
        let shift = 12 + 9 * (4 - level) as u32;
        let span = 1u64 << shift;
        let mut entries = [0u64; 512];
        let mut raw = [0u8; 4096];
        mem.read_slice(&mut raw, GuestAddress(table))
            .map_err(|_| Error::PhysRead {
                addr: table,
                len: 4096,
            })?;
        for (i, e) in entries.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            *e = u64::from_le_bytes(b);
        }
        for (i, &entry) in entries.iter().enumerate() {
            // The canonical address this entry maps: sign-extend past the top level.
            let lo = base.wrapping_add(i as u64 * span);
            let lo = if level == first && lo >> (va_bits - 1) & 1 == 1 {
                lo | !va_mask
            } else {
                lo
            };
            let hi = lo.wrapping_add(span);
            if hi <= start && hi != 0 || lo >= end {
                continue;
            }
            if left == 0 {
                return Err(Error::Corrupt {
                    what: "page tables",
                    addr: table,
                    why: format!("more than {budget} entries under [{start:#x}, {end:#x})"),
                });
            }
            left -= 1;
            if entry & PRESENT == 0 {
                continue;
            }
            let leaf = level == 4 || (entry & PAGE_SIZE_BIT != 0 && (level == 2 || level == 3));
            if leaf {
                let from = lo.max(start);
                let to = if hi == 0 { end } else { hi.min(end) };
                total += to - from;
            } else {
                stack.push((entry & ADDR_MASK, level + 1, lo));
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const P: u64 = PRESENT | 2; // present, writable
    const PS: u64 = PAGE_SIZE_BIT;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    fn put(m: &GuestMemoryMmap, table: u64, index: u64, entry: u64) {
        m.write_obj(entry, GuestAddress(table + index * 8)).unwrap();
    }

    fn idx(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * level)) & 0x1ff
    }

    #[test]
    fn four_level_4k_2m_1g_pages() {
        let m = mem();
        let (pml4, pdpt, pd, pt) = (0x1000, 0x2000, 0x3000, 0x4000);
        let va = 0xffff_c900_0012_3456u64;
        put(&m, pml4, idx(va, 3), pdpt | P);
        put(&m, pdpt, idx(va, 2), pd | P);
        put(&m, pd, idx(va, 1), pt | P);
        put(&m, pt, idx(va, 0), 0x0077_7000 | P | (1 << 63));
        let root = PageTable::new(pml4 | 0x5 | (1 << 63), PagingLevels::Four);
        assert_eq!(walk(&m, root, va).unwrap(), (0x0077_7456, 0x1000 - 0x456));

        // A 2 MiB page in the next PD slot, a 1 GiB page in the next PDPT slot.
        let va2 = va + (2 << 20);
        put(&m, pd, idx(va2, 1), 0x0060_0000 | P | PS);
        assert_eq!(
            walk(&m, root, va2).unwrap(),
            (
                0x0060_0000 | (va2 & 0x1f_ffff),
                (2 << 20) - (va2 & 0x1f_ffff)
            )
        );
        let va3 = va + (1 << 30);
        put(&m, pdpt, idx(va3, 2), 0x4000_0000 | P | PS);
        assert_eq!(
            walk(&m, root, va3).unwrap().0,
            0x4000_0000 | (va3 & 0x3fff_ffff)
        );

        // Not present at each level names the level.
        let e = walk(&m, root, va + (4 << 12)).unwrap_err();
        assert!(matches!(e, Error::NotMapped { level: "PT", .. }), "{e}");
        let e = walk(&m, root, 0xffff_8000_0000_0000).unwrap_err();
        assert!(matches!(e, Error::NotMapped { level: "PML4", .. }), "{e}");
        assert!(matches!(
            walk(&m, root, 0x0000_8000_0000_0000),
            Err(Error::NonCanonical { .. })
        ));
    }

    #[test]
    fn mapped_bytes_counts_present_pages_in_a_range_only() {
        let m = mem();
        let (pml4, pdpt, pd, pt) = (0x1000, 0x2000, 0x3000, 0x4000);
        // An arena-like range in vmalloc space: 4 GiB from a 2 MiB boundary.
        let start = 0xffff_c900_0000_0000u64;
        let end = start + (4 << 30);
        put(&m, pml4, idx(start, 3), pdpt | P);
        put(&m, pdpt, idx(start, 2), pd | P);
        put(&m, pd, idx(start, 1), pt | P);
        for page in [0u64, 1, 2, 511] {
            put(&m, pt, page, (0x10_0000 + page * 0x1000) | P);
        }
        // A not-present entry with other bits set counts nothing.
        put(&m, pt, 7, 0x0077_7000);
        // A 2 MiB page two PD slots on.
        put(&m, pd, idx(start, 1) + 2, 0x0060_0000 | P | PS);
        let root = PageTable::new(pml4, PagingLevels::Four);
        let all = mapped_bytes(&m, root, start, end, 1 << 20).unwrap();
        assert_eq!(all, 4 * 4096 + (2 << 20));
        // A sub-range: from page 2 to the middle of the large page.
        let part = mapped_bytes(&m, root, start + 2 * 4096, start + (5 << 20), 1 << 20).unwrap();
        assert_eq!(part, 2 * 4096 + (1 << 20));
        // Nothing mapped below the range's tables.
        assert_eq!(
            mapped_bytes(&m, root, start - (1 << 30), start, 1 << 20).unwrap(),
            0
        );
        // The budget bounds the entries read; garbage cannot run long.
        let e = mapped_bytes(&m, root, start, end, 100).unwrap_err();
        assert!(e.to_string().contains("more than 100 entries"), "{e}");
        // A table outside guest RAM is an error, not a count.
        put(&m, pd, idx(start, 1) + 3, (1 << 40) | P);
        assert!(mapped_bytes(&m, root, start, end, 1 << 20).is_err());
    }

    #[test]
    fn five_level_and_tables_outside_ram() {
        let m = mem();
        let (pml5, pml4, pdpt, pd, pt) = (0x1000, 0x2000, 0x3000, 0x4000, 0x5000);
        let va = 0xff11_0000_0040_2000u64;
        put(&m, pml5, (va >> 48) & 0x1ff, pml4 | P);
        put(&m, pml4, idx(va, 3), pdpt | P);
        put(&m, pdpt, idx(va, 2), pd | P);
        put(&m, pd, idx(va, 1), pt | P);
        put(&m, pt, idx(va, 0), 0x9000 | P);
        let root = PageTable::new(pml5, PagingLevels::Five);
        assert_eq!(walk(&m, root, va).unwrap(), (0x9000, 0x1000));
        // 4-level canonical but not 5-level canonical... and the reverse.
        assert!(walk(&m, root, 0x00ff_0000_0000_0000).is_err());
        assert!(matches!(
            walk(&m, PageTable::new(pml5, PagingLevels::Four), va),
            Err(Error::NonCanonical { .. })
        ));
        // A table pointer past guest RAM is a read error, not a panic.
        put(&m, pt, idx(va, 0) + 1, 0);
        put(&m, pd, idx(va, 1) + 1, 0x7fff_0000_0000 | P);
        let e = walk(&m, root, va + (2 << 20)).unwrap_err();
        assert!(matches!(e, Error::PhysRead { .. }), "{e}");
    }
}
