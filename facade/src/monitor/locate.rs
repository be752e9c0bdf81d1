//! Where the guest kernel runs, per boot: the address layout the sampler
//! reads through.
//!
//! A `nokaslr` boot of the ELF vmlinux runs at its link address: the layout
//! is known, and checked (the image's `linux_banner` must be where the
//! arithmetic puts it). A randomized (bzImage, KASLR) boot is located from
//! vCPU 0's CR3, which the runner reads through the backend and sends here
//! until found ([`ktstr_guest_mem::kaslr::locate`]); the guest's own
//! `phys_base` must then agree, and the direct map's base is read from the
//! guest only once the kernel has counted its CPUs (after `setup_arch`
//! randomized it).

use std::time::Duration;

use ktstr_btf::Btf;
use ktstr_guest_mem::kaslr::{self, Placement, Signature};
use ktstr_guest_mem::{AddressLayout, GuestKernel, KernelSymbols, PageTable, PagingLevels};
use ktstr_vmm::{VcpuRegs, VmmError};
use vm_memory::GuestMemory;

use super::sampler::kernel_layout;
use super::{KernelPlacement, MonitorError};

/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;

/// Finds one guest kernel's layout.
pub(crate) struct Locator<'a, M: GuestMemory + ?Sized> {
    mem: &'a M,
    syms: &'a KernelSymbols,
    btf: &'a Btf<'a>,
    sig: Signature,
    kaslr: bool,
    nr_cpus: u32,
    placement: Option<Placement>,
    why: MonitorError,
}

impl<'a, M: GuestMemory + ?Sized> Locator<'a, M> {
    pub(crate) fn new(
        mem: &'a M,
        syms: &'a KernelSymbols,
        btf: &'a Btf<'a>,
        sig: Signature,
        kaslr: bool,
        nr_cpus: u32,
    ) -> Self {
        let why = if kaslr {
            "the randomized kernel has not been located yet (no vCPU registers read)"
        } else {
            "the kernel image has not been checked yet"
        };
        Locator {
            mem,
            syms,
            btf,
            sig,
            kaslr,
            nr_cpus,
            placement: None,
            why: MonitorError::Unavailable(why.into()),
        }
    }

    /// Whether the image has been placed (no more registers are needed).
    pub(crate) fn placed(&self) -> bool {
        !self.kaslr || self.placement.is_some()
    }

    /// Why there is no layout yet.
    pub(crate) fn why(&self) -> MonitorError {
        self.why.clone()
    }

    /// vCPU registers the runner read (or why it could not).
    pub(crate) fn registers(&mut self, regs: Result<VcpuRegs, VmmError>) {
        if self.placed() {
            return;
        }
        let regs = match regs {
            Ok(r) => r,
            Err(e) => {
                self.why = MonitorError::Unavailable(format!(
                    "reading vCPU 0's registers to locate the randomized kernel: {e}"
                ));
                return;
            }
        };
        let levels = if regs.cr4 & CR4_LA57 != 0 {
            PagingLevels::Five
        } else {
            PagingLevels::Four
        };
        match kaslr::locate(
            self.mem,
            self.syms,
            PageTable::new(regs.cr3, levels),
            &self.sig,
        ) {
            Ok(p) => self.placement = Some(p),
            Err(e) => self.why = MonitorError::from(e),
        }
    }

    /// The kernel, laid out for reading, once everything is known; the
    /// reason otherwise (kept for [`Locator::why`]).
    pub(crate) fn kernel(&mut self) -> Result<(GuestKernel<'a, M>, KernelPlacement), MonitorError> {
        let r = self.try_kernel();
        if let Err(e) = &r {
            self.why = e.clone();
        }
        r
    }

    fn try_kernel(&mut self) -> Result<(GuestKernel<'a, M>, KernelPlacement), MonitorError> {
        if !self.kaslr {
            let fixed = Placement {
                slide: 0,
                phys_base: 0,
                root: PageTable::new(0, PagingLevels::Four),
            };
            kaslr::check_fixed(self.mem, fixed, &self.sig)?;
            let k = GuestKernel::new(self.mem, self.syms, self.btf, AddressLayout::nokaslr())?;
            let layout = kernel_layout(&k)?;
            let k = GuestKernel::new(self.mem, self.syms, self.btf, layout)?;
            return Ok((k, placement_of(&fixed, false, layout)));
        }
        let p = self.placement.ok_or_else(|| self.why.clone())?;
        let base = AddressLayout::nokaslr()
            .with_kaslr_offset(p.slide)
            .with_phys_base(p.phys_base);
        let k = GuestKernel::new(self.mem, self.syms, self.btf, base)?;
        let guest_pb = k.read_u64(k.symbol("phys_base")?)?;
        if guest_pb != p.phys_base {
            // Found through page tables the kernel has since changed (or
            // garbage): look again with fresh registers.
            self.placement = None;
            return Err(MonitorError::Unavailable(format!(
                "KASLR: the guest's phys_base {guest_pb:#x} disagrees with {:#x} found through \
                 CR3 {:#x} (slide {:#x}); locating again",
                p.phys_base, p.root.cr3, p.slide
            )));
        }
        let n = k.read_u32(k.symbol("nr_cpu_ids")?)?;
        if n == 0 || n > self.nr_cpus {
            return Err(MonitorError::Unavailable(format!(
                "the randomized kernel (slide {:#x}) has not counted its CPUs yet \
                 (nr_cpu_ids {n}): its direct map may still move",
                p.slide
            )));
        }
        let k = k.with_page_offset_base_from_guest()?;
        let pob = k.layout().page_offset_base();
        // KASLR places the direct map in the kernel half on a 1 GiB boundary
        // (arch/x86/mm/kaslr.c aligns regions to PUD_SIZE).
        if pob < 0xff00_0000_0000_0000 || pob % (1 << 30) != 0 {
            return Err(MonitorError::Unavailable(format!(
                "KASLR: the guest's page_offset_base {pob:#x} is not a direct-map base \
                 (kernel half, 1 GiB aligned)"
            )));
        }
        let layout = kernel_layout(&k)?;
        let k = GuestKernel::new(self.mem, self.syms, self.btf, layout)?;
        Ok((k, placement_of(&p, true, layout)))
    }
}

fn placement_of(p: &Placement, randomized: bool, layout: AddressLayout) -> KernelPlacement {
    KernelPlacement {
        randomized,
        slide: p.slide,
        phys_base: p.phys_base,
        page_offset_base: layout.page_offset_base(),
        located_after: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_guest_mem::testkit::{Guest, kernel_btf};

    /// A signature the crafted guest shows at its link place: its `jiffies`.
    fn sig(g: &Guest) -> Signature {
        let va = g.syms.address("jiffies").expect("crafted jiffies");
        let mut bytes = vec![0u8; 8];
        g.kernel().read(va, &mut bytes).expect("crafted image");
        Signature { va, bytes }
    }

    #[test]
    fn a_nokaslr_image_is_checked_by_its_bytes() {
        let g = Guest::new();
        let mut l = Locator::new(&g.mem, &g.syms, kernel_btf(), sig(&g), false, 2);
        assert!(l.placed());
        // The banner matched; the crafted image then lacks init_top_pgt.
        let e = l.kernel().expect_err("no init_top_pgt");
        assert!(e.to_string().contains("init_top_pgt"), "{e}");
        let mut other = sig(&g);
        other.bytes[0] ^= 0xff;
        let mut l = Locator::new(&g.mem, &g.syms, kernel_btf(), other, false, 2);
        let e = l.kernel().expect_err("another image");
        assert!(e.to_string().contains("linux_banner"), "{e}");
    }

    #[test]
    fn a_randomized_kernel_without_usable_registers_says_why() {
        let g = Guest::new();
        let mut l = Locator::new(&g.mem, &g.syms, kernel_btf(), sig(&g), true, 2);
        assert!(!l.placed());
        let e = l.kernel().expect_err("nothing read yet");
        assert!(e.to_string().contains("not been located"), "{e}");
        l.registers(Err(VmmError::Control("QMP is gone".into())));
        assert!(l.why().to_string().contains("QMP is gone"), "{}", l.why());
        // The crafted tables map no image in the kernel window; garbage CR3s
        // read outside RAM: errors, not panics, and still not placed.
        for cr3 in [g.layout.page_table().expect("root").cr3, u64::MAX, 0] {
            let regs = VcpuRegs {
                cr3,
                cr4: CR4_LA57,
                ..VcpuRegs::default()
            };
            l.registers(Ok(regs));
            assert!(!l.placed());
            assert!(l.why().to_string().contains("KASLR"), "{}", l.why());
        }
    }
}
