//! Where a randomized (KASLR) kernel runs: its virtual slide and `phys_base`, found from a
//! page-table root the caller read from a vCPU (CR3) and proven by the image's own bytes.
//!
//! x86-64 KASLR (arch/x86/boot/compressed/kaslr.c) moves the image by a multiple of
//! `CONFIG_PHYSICAL_ALIGN` inside the 1 GiB kernel-image window at `__START_KERNEL_map`, and
//! places it physically anywhere in RAM, independently. A vCPU running the kernel runs on page
//! tables whose kernel half maps the image; so every candidate slide is tried through the
//! vCPU's root, and the one whose mapping holds the image's `linux_banner` (read from the
//! vmlinux file: it also proves the booted image is the one whose symbols are used) is the
//! slide. Its mapping of `_text` gives `phys_base`. Exactly one candidate must match: early in
//! boot (before `cleanup_highmap`) the window still maps physical memory past the image
//! one-to-one, where a second copy of the banner can appear; that is [`Error::Kaslr`], and the
//! caller asks again later.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::error::{Error, Result};
use crate::symbols::KernelSymbols;
use crate::translate::START_KERNEL_MAP;
use crate::x86_64::{self, PageTable};

/// `KERNEL_IMAGE_SIZE` with KASLR (arch/x86/include/asm/page_64_types.h): the window the
/// image is placed in.
pub const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// The smallest `CONFIG_PHYSICAL_ALIGN` x86-64 allows (2 MiB, arch/x86/Kconfig): every slide is
/// a multiple of it.
pub const SLIDE_ALIGN: u64 = 2 << 20;
/// The symbol whose bytes prove a candidate.
pub const SIGNATURE_SYMBOL: &str = "linux_banner";
/// Bytes of [`SIGNATURE_SYMBOL`] compared (`Linux version <release> (<builder>) ...`).
pub const SIGNATURE_LEN: usize = 96;

/// The bytes a correctly placed image shows at a link-time address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Link-time virtual address.
    pub va: u64,
    /// The image's bytes there.
    pub bytes: Vec<u8>,
}

impl Signature {
    /// [`SIGNATURE_LEN`] bytes of `linux_banner` from the vmlinux at `path`.
    pub fn from_image(path: &std::path::Path, syms: &KernelSymbols) -> Result<Self> {
        let va = syms
            .address(SIGNATURE_SYMBOL)
            .ok_or_else(|| Error::NoSymbol(SIGNATURE_SYMBOL.into()))?;
        let bytes = crate::image::read_at(path, va, SIGNATURE_LEN)?;
        Ok(Signature { va, bytes })
    }
}

/// Where the kernel runs: what [`crate::AddressLayout`] needs for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Virtual slide: running address = link address + slide.
    pub slide: u64,
    /// `phys_base`: physical = running virtual - `__START_KERNEL_map` + `phys_base` (wrapping).
    pub phys_base: u64,
    /// The root the image was found through (CR3 with the PCID bits, and with page-table
    /// isolation the user-half bit 12, cleared).
    pub root: PageTable,
}

/// Finds the slide through the vCPU root `root` (CR3 as read, and its depth): see the module
/// documentation. A root that maps no candidate (the vCPU still in the decompressor, garbage
/// CR3) or maps two is an [`Error::Kaslr`] saying so; nothing here panics on guest data.
pub fn locate<M: GuestMemory + ?Sized>(
    mem: &M,
    syms: &KernelSymbols,
    root: PageTable,
    sig: &Signature,
) -> Result<Placement> {
    let sym = |n: &str| syms.address(n).ok_or_else(|| Error::NoSymbol(n.into()));
    let (text, end) = (sym("_text")?, sym("_end")?);
    let ok_image = text >= START_KERNEL_MAP
        && end > text
        && end - START_KERNEL_MAP <= KERNEL_IMAGE_SIZE
        && (sig.va >= text && sig.va < end);
    if !ok_image {
        return Err(Error::Kaslr(format!(
            "the image's _text {text:#x}, _end {end:#x} and {SIGNATURE_SYMBOL} {:#x} are not \
             those of an x86-64 kernel linked at __START_KERNEL_map",
            sig.va
        )));
    }
    // With page-table isolation a vCPU in user mode runs on the user copy of the PGD (bit 12
    // set), which maps almost nothing of the kernel: its kernel copy is the page below.
    let mut roots = vec![PageTable::new(root.cr3 & !0xfff, root.levels)];
    if root.cr3 & 0x1000 != 0 {
        roots.push(PageTable::new(root.cr3 & !0x1fff, root.levels));
    }
    let max_slide = START_KERNEL_MAP + KERNEL_IMAGE_SIZE - end;
    let mut found: Vec<Placement> = Vec::new();
    for r in &roots {
        let mut slide = 0;
        while slide <= max_slide {
            if shows(mem, *r, sig.va.wrapping_add(slide), &sig.bytes)
                && let Ok((pa, _)) = x86_64::walk(mem, *r, text.wrapping_add(slide))
            {
                let phys_base = pa.wrapping_sub(text.wrapping_add(slide) - START_KERNEL_MAP);
                found.push(Placement {
                    slide,
                    phys_base,
                    root: *r,
                });
            }
            slide += SLIDE_ALIGN;
        }
        if !found.is_empty() {
            break;
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::Kaslr(format!(
            "no slide (a multiple of 2 MiB below 1 GiB) maps the image's {SIGNATURE_SYMBOL} \
             through the page tables at CR3 {:#x}: the vCPU is not running this kernel yet \
             (or runs another image)",
            root.cr3
        ))),
        many => Err(Error::Kaslr(format!(
            "{} slides map the image's {SIGNATURE_SYMBOL} through CR3 {:#x} ({}): the kernel \
             has not yet removed its early mappings",
            many.len(),
            root.cr3,
            many.iter()
                .map(|p| format!("{:#x}", p.slide))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether `bytes` are at `va` through `root` (page by page; any failure is a no).
fn shows<M: GuestMemory + ?Sized>(mem: &M, root: PageTable, va: u64, bytes: &[u8]) -> bool {
    let mut done = 0usize;
    let mut buf = [0u8; 256];
    while done < bytes.len() {
        let at = va.wrapping_add(done as u64);
        let Ok((pa, run)) = x86_64::walk(mem, root, at) else {
            return false;
        };
        let n = (bytes.len() - done)
            .min(usize::try_from(run).unwrap_or(usize::MAX))
            .min(buf.len());
        if mem.read_slice(&mut buf[..n], GuestAddress(pa)).is_err()
            || buf[..n] != bytes[done..done + n]
        {
            return false;
        }
        done += n;
    }
    true
}

/// Checks a placement known without a vCPU (a `nokaslr` boot: slide 0, `phys_base` 0): the
/// banner must be where the image arithmetic puts it.
pub fn check_fixed<M: GuestMemory + ?Sized>(
    mem: &M,
    placement: Placement,
    sig: &Signature,
) -> Result<()> {
    let pa = sig
        .va
        .wrapping_add(placement.slide)
        .wrapping_sub(START_KERNEL_MAP)
        .wrapping_add(placement.phys_base);
    let mut buf = vec![0u8; sig.bytes.len()];
    mem.read_slice(&mut buf, GuestAddress(pa))
        .map_err(|_| Error::PhysRead {
            addr: pa,
            len: buf.len(),
        })?;
    if buf != sig.bytes {
        return Err(Error::Kaslr(format!(
            "the image's {SIGNATURE_SYMBOL} is not at guest physical {pa:#x} (slide {:#x}, \
             phys_base {:#x}): the guest runs another image, or one that was randomized",
            placement.slide, placement.phys_base
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;
    use crate::x86_64::PagingLevels;
    use vm_memory::GuestMemoryMmap;

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    const END: u64 = TEXT + (4 << 20);
    const BANNER: u64 = TEXT + 0x12_3456;
    const PML4: u64 = 0x2000; // 8 KiB aligned: the user copy (PTI) is the page above
    const PDPT: u64 = 0x4000;
    const PD: u64 = 0x5000;

    fn syms() -> KernelSymbols {
        KernelSymbols::from_entries([
            ("_text", TEXT, b'T'),
            ("_end", END, b'B'),
            ("linux_banner", BANNER, b'D'),
        ])
    }

    fn sig() -> Signature {
        let mut bytes = b"Linux version 7.3.4-test (ktstr) #1 SMP".to_vec();
        bytes.resize(SIGNATURE_LEN, b'.');
        Signature { va: BANNER, bytes }
    }

    /// 32 MiB of RAM with the image mapped at `slide` onto physical `pa` (2 MiB pages) and its
    /// banner written there.
    fn guest(slide: u64, pa: u64) -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        let va = TEXT + slide;
        let put = |t: u64, i: u64, e: u64| m.write_obj(e, GuestAddress(t + i * 8)).unwrap();
        put(PML4, (va >> 39) & 0x1ff, PDPT | 3);
        put(PDPT, (va >> 30) & 0x1ff, PD | 3);
        for k in 0..2 {
            put(PD, ((va >> 21) & 0x1ff) + k, (pa + (k << 21)) | 0x83);
        }
        m.write_slice(&sig().bytes, GuestAddress(pa + (BANNER - TEXT)))
            .unwrap();
        m
    }

    fn root(cr3: u64) -> PageTable {
        PageTable::new(cr3, PagingLevels::Four)
    }

    #[test]
    fn the_slide_and_phys_base_of_a_randomized_image() {
        let slide = 0x2a20_0000;
        let m = guest(slide, 0x40_0000);
        let p = locate(&m, &syms(), root(PML4 | 0x5), &sig()).unwrap();
        assert_eq!(p.slide, slide);
        // physical = running virtual - __START_KERNEL_map + phys_base
        assert_eq!(
            (TEXT + slide - START_KERNEL_MAP).wrapping_add(p.phys_base),
            0x40_0000
        );
        check_fixed(&m, p, &sig()).unwrap();
    }

    #[test]
    fn a_vcpu_on_the_user_copy_of_its_pgd_is_followed_to_the_kernel_copy() {
        let m = guest(0x20_0000, 0x60_0000);
        let p = locate(&m, &syms(), root(PML4 | 0x1000), &sig()).unwrap();
        assert_eq!((p.slide, p.root.cr3), (0x20_0000, PML4));
    }

    #[test]
    fn garbage_roots_and_other_images_are_errors_not_panics() {
        let m = guest(0x20_0000, 0x60_0000);
        for cr3 in [0, u64::MAX, 0x7fff_ffff_f000, PD] {
            let e = locate(&m, &syms(), root(cr3), &sig()).unwrap_err();
            assert!(matches!(e, Error::Kaslr(_)), "{e}");
        }
        let mut other = sig();
        other.bytes[14] = b'6';
        let e = locate(&m, &syms(), root(PML4), &other).unwrap_err();
        assert!(e.to_string().contains("not running this kernel yet"), "{e}");
        let p = Placement {
            slide: 0,
            phys_base: 0,
            root: root(0),
        };
        let e = check_fixed(&m, p, &sig()).unwrap_err();
        assert!(e.to_string().contains("linux_banner"), "{e}");
        let bad = KernelSymbols::from_entries([("_text", 0x1000, b'T'), ("_end", 0x2000, b'B')]);
        assert!(locate(&m, &bad, root(PML4), &sig()).is_err());
    }

    #[test]
    fn two_candidates_are_ambiguous() {
        let m = guest(0x20_0000, 0x60_0000);
        // A second mapping of the same pages (as before cleanup_highmap): two slides match.
        let va = TEXT + 0x100_0000;
        m.write_obj(
            0x60_0000u64 | 0x83,
            GuestAddress(PD + ((va >> 21) & 0x1ff) * 8),
        )
        .unwrap();
        m.write_obj(
            0x80_0000u64 | 0x83,
            GuestAddress(PD + (((va >> 21) & 0x1ff) + 1) * 8),
        )
        .unwrap();
        let e = locate(&m, &syms(), root(PML4), &sig()).unwrap_err();
        assert!(e.to_string().contains("2 slides"), "{e}");
    }
}
