//! Guest virtual to guest physical: the kernel image and the direct map by arithmetic, anything
//! else (vmalloc, modules, BPF map values) by a page-table walk from a root the caller gives.
//!
//! Every input that depends on how the guest booted — the KASLR slide, `phys_base`,
//! `page_offset_base`, CR3 and the paging depth — is a value in [`AddressLayout`]: the reader
//! never guesses them. With `nokaslr` (the default boot) [`AddressLayout::nokaslr`] is
//! exact; with KASLR the caller passes what [`crate::kaslr::locate`] found from a vCPU's CR3.

use vm_memory::{GuestMemory, GuestMemoryBackend};

use crate::error::{Error, Result};
use crate::x86_64::{self, PageTable};

/// `__START_KERNEL_map` (`arch/x86/include/asm/page_64_types.h`): where the image is linked.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `__PAGE_OFFSET_BASE_L4`: the direct map's start with 4-level paging and no KASLR.
pub const PAGE_OFFSET_BASE_L4: u64 = 0xffff_8880_0000_0000;
/// `__PAGE_OFFSET_BASE_L5`: the same with 5-level paging.
pub const PAGE_OFFSET_BASE_L5: u64 = 0xff11_0000_0000_0000;

/// How the guest kernel's address space is laid out: the values a translation needs.
///
/// ```
/// use ktstr_guest_mem::{AddressLayout, PageTable, PagingLevels};
/// let layout = AddressLayout::nokaslr().with_page_table(PageTable::new(0x1c0_9000, PagingLevels::Four));
/// assert_eq!(layout.kaslr_offset(), 0);
/// assert!(layout.page_table().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressLayout {
    kaslr_offset: u64,
    phys_base: u64,
    page_offset_base: u64,
    page_table: Option<PageTable>,
}

impl AddressLayout {
    /// A kernel booted with `nokaslr` and 4-level paging: no slide, `phys_base` 0, the direct
    /// map at [`PAGE_OFFSET_BASE_L4`], no page-table root (image and direct map only).
    pub const fn nokaslr() -> Self {
        AddressLayout {
            kaslr_offset: 0,
            phys_base: 0,
            page_offset_base: PAGE_OFFSET_BASE_L4,
            page_table: None,
        }
    }

    /// Set the virtual KASLR slide: a symbol's running address is its link address plus this.
    pub const fn with_kaslr_offset(mut self, offset: u64) -> Self {
        self.kaslr_offset = offset;
        self
    }

    /// Set the guest's `phys_base`: an image address's physical address is
    /// `virt - __START_KERNEL_map + phys_base`.
    pub const fn with_phys_base(mut self, phys_base: u64) -> Self {
        self.phys_base = phys_base;
        self
    }

    /// Set the direct map's start (the guest's `page_offset_base`).
    pub const fn with_page_offset_base(mut self, base: u64) -> Self {
        self.page_offset_base = base;
        self
    }

    /// Set the page-table root used for addresses outside the image and the direct map.
    pub const fn with_page_table(mut self, pt: PageTable) -> Self {
        self.page_table = Some(pt);
        self
    }

    /// The KASLR slide.
    pub const fn kaslr_offset(&self) -> u64 {
        self.kaslr_offset
    }

    /// `phys_base`.
    pub const fn phys_base(&self) -> u64 {
        self.phys_base
    }

    /// `page_offset_base`.
    pub const fn page_offset_base(&self) -> u64 {
        self.page_offset_base
    }

    /// The page-table root, if one was given.
    pub const fn page_table(&self) -> Option<PageTable> {
        self.page_table
    }
}

impl Default for AddressLayout {
    fn default() -> Self {
        Self::nokaslr()
    }
}

/// Translates with a layout, the image's running bounds and the size of guest RAM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Translator {
    pub layout: AddressLayout,
    /// Running `[_text, _end)`.
    pub image: (u64, u64),
    /// Bytes of guest physical address space the direct map can cover.
    pub direct_len: u64,
}

impl Translator {
    /// `image` is the link-time `[_text, _end)`; `mem` bounds the direct map.
    pub fn new<M: GuestMemory + ?Sized>(layout: AddressLayout, image: (u64, u64), mem: &M) -> Self {
        let slide = layout.kaslr_offset;
        // The direct map covers guest RAM; past it (by at least the 10 TiB padding KASLR
        // leaves) other regions start, so the window must not reach beyond RAM.
        let direct_len = mem
            .physical_memory()
            .map_or(1 << 40, |p| p.last_addr().0.saturating_add(1));
        Translator {
            layout,
            image: (image.0.wrapping_add(slide), image.1.wrapping_add(slide)),
            direct_len,
        }
    }

    /// Whether `va` translates by arithmetic (kernel image or direct map), not by a walk.
    pub fn by_arithmetic(&self, va: u64) -> bool {
        let (start, end) = self.image;
        (va >= start && va < end)
            || va
                .checked_sub(self.layout.page_offset_base)
                .is_some_and(|off| off < self.direct_len)
    }

    /// (guest physical address, bytes it stays contiguous for) of `va`.
    pub fn translate<M: GuestMemory + ?Sized>(&self, mem: &M, va: u64) -> Result<(u64, u64)> {
        let (start, end) = self.image;
        if va >= start && va < end {
            let pa = (va - START_KERNEL_MAP).wrapping_add(self.layout.phys_base);
            return Ok((pa, end - va));
        }
        let pob = self.layout.page_offset_base;
        if let Some(off) = va.checked_sub(pob)
            && off < self.direct_len
        {
            return Ok((off, self.direct_len - off));
        }
        match self.layout.page_table {
            Some(pt) => x86_64::walk(mem, pt, va),
            None => Err(Error::NoPageTable { va }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn image_and_direct_map_by_arithmetic() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let image = (0xffff_ffff_8100_0000, 0xffff_ffff_8200_0000);
        let t = Translator::new(AddressLayout::nokaslr(), image, &mem);
        assert_eq!(
            t.translate(&mem, 0xffff_ffff_8100_0010).unwrap().0,
            0x100_0010
        );
        assert_eq!(
            t.translate(&mem, PAGE_OFFSET_BASE_L4 + 0x5000).unwrap().0,
            0x5000
        );
        // Past RAM in the direct map, and vmalloc space without a root: clear errors.
        let e = t
            .translate(&mem, PAGE_OFFSET_BASE_L4 + (64 << 20))
            .unwrap_err();
        assert!(matches!(e, Error::NoPageTable { .. }), "{e}");
        let e = t.translate(&mem, 0xffff_c900_0000_0000).unwrap_err();
        assert!(e.to_string().contains("no page-table root"), "{e}");

        // KASLR: a 32 MiB virtual slide and a phys_base of 48 MiB.
        let layout = AddressLayout::nokaslr()
            .with_kaslr_offset(32 << 20)
            .with_phys_base(48 << 20)
            .with_page_offset_base(0xffff_9000_0000_0000);
        let t = Translator::new(layout, image, &mem);
        let va = 0xffff_ffff_8100_0010 + (32 << 20);
        assert_eq!(t.translate(&mem, va).unwrap().0, 0x300_0010 + (48 << 20));
        assert_eq!(t.translate(&mem, 0xffff_9000_0000_1000).unwrap().0, 0x1000);
        assert!(t.translate(&mem, PAGE_OFFSET_BASE_L4).is_err());
    }
}
