//! Loading the kernel the way Linux is booted: linux-loader's ELF (PVH) or
//! bzImage loader, the command line, the initrd, the ACPI tables of
//! `ktstr-acpi`, and the PVH `hvm_start_info` or the bzImage `boot_params`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use ktstr_acpi::{
    AcpiConfig, AcpiSink, BOOT_ARCH_CMOS_RTC_NOT_PRESENT, BOOT_ARCH_VGA_NOT_PRESENT, FadtConfig,
    IoPort, MemoryAffinity,
};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Cmdline, Elf, KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    CMDLINE_ADDR, CMDLINE_MAX, E820Entry, EBDA_START, HIMEM_START, PVH_INFO_ADDR, PVH_MEMMAP_ADDR,
    PVH_MEMMAP_MAX, PVH_MODLIST_ADDR, ZERO_PAGE_ADDR, e820_map, initrd_address,
};
use super::regs::Entry;
use crate::kvm::devices::{
    COM1, COM1_IRQ, COM2, COM2_IRQ, PCI_RESET_VALUE, PORT_PCI_RESET, PORT_SLEEP_CONTROL,
    PORT_SLEEP_STATUS,
};
use crate::{RamRegion, VmSpec, VmmError};
use ktstr_acpi::aml::{self, SerialPort};

/// What the VMM placed where, for the boot vCPU and for diagnostics.
#[derive(Debug, Clone)]
pub(crate) struct BootLayout {
    pub(crate) entry: Entry,
    pub(crate) rsdp: u64,
    pub(crate) initrd: Option<(u64, u64)>,
}

/// `hvm_start_info` magic (xen/include/public/arch-x86/hvm/start_info.h).
const HVM_START_MAGIC: u32 = 0x336e_c578;
/// boot_params `type_of_loader`: "undefined" boot loader (boot.rst).
const LOADER_UNDEFINED: u8 = 0xff;
/// setup header `xloadflags`: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// setup header magic "HdrS" at file offset 0x202.
const HDRS_MAGIC: u32 = 0x5372_6448;

/// Guest memory as an ACPI sink.
struct GuestSink<'a>(&'a GuestMemoryMmap);

impl AcpiSink for GuestSink<'_> {
    type Error = vm_memory::GuestMemoryError;
    fn write_at(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write_slice(bytes, GuestAddress(addr))
    }
}

/// The ACPI tables' FADT: power-off through the sleep control register, reset
/// through the PC's reset control port, and neither VGA nor a CMOS RTC (the
/// guest keeps time with kvmclock; without the flag Linux probes ports
/// 0x70/0x71, which read as all-ones here).
pub(crate) fn fadt_config() -> FadtConfig {
    FadtConfig {
        reset_register: Some(IoPort {
            port: PORT_PCI_RESET,
        }),
        reset_value: PCI_RESET_VALUE,
        sleep_control: Some(IoPort {
            port: PORT_SLEEP_CONTROL,
        }),
        sleep_status: Some(IoPort {
            port: PORT_SLEEP_STATUS,
        }),
        iapc_boot_arch: BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_CMOS_RTC_NOT_PRESENT,
    }
}

/// The DSDT's device descriptions: COM1 and COM2 with their interrupts (see
/// [`ktstr_acpi::aml`] for why a hardware-reduced machine needs them).
pub(crate) fn dsdt_aml() -> Vec<u8> {
    aml::serial_ports(&[
        SerialPort {
            name: *b"COM1",
            uid: 1,
            base: COM1,
            irq: COM1_IRQ as u8,
        },
        SerialPort {
            name: *b"COM2",
            uid: 2,
            base: COM2,
            irq: COM2_IRQ as u8,
        },
    ])
}

/// The command line the kernel gets: [`MACHINE_CMDLINE`](crate::kvm::MACHINE_CMDLINE)
/// first, so that the spec's own parameters override it.
/// A payload region adds where it is (`ktstr.payload=SIZE@ADDR`).
pub(crate) fn kernel_cmdline(spec: &VmSpec) -> String {
    match crate::kvm::payload::cmdline_word(spec) {
        Some(w) => format!("{} {} {w}", crate::kvm::MACHINE_CMDLINE, spec.cmdline),
        None => format!("{} {}", crate::kvm::MACHINE_CMDLINE, spec.cmdline),
    }
}

fn kernel_format(file: &mut File) -> std::io::Result<Format> {
    let mut head = [0u8; 0x206];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(if n >= 4 && head[..4] == *b"\x7fELF" {
        Format::Elf
    } else if n == head.len()
        && u32::from_le_bytes([head[0x202], head[0x203], head[0x204], head[0x205]]) == HDRS_MAGIC
    {
        Format::BzImage
    } else {
        Format::Unknown
    })
}

/// A loaded kernel and how to enter it.
enum Loaded {
    Pvh {
        entry: u64,
    },
    BzImage {
        hdr: linux_loader::loader::bootparam::setup_header,
        load: u64,
    },
}

/// The bzImage setup header, for the limits it sets.
fn setup_header(loaded: &Loaded) -> Option<&linux_loader::loader::bootparam::setup_header> {
    match loaded {
        Loaded::Pvh { .. } => None,
        Loaded::BzImage { hdr, .. } => Some(hdr),
    }
}

enum Format {
    Elf,
    BzImage,
    Unknown,
}

fn load_err(what: &str, spec: &VmSpec) -> impl FnOnce(linux_loader::loader::Error) -> VmmError {
    let path = spec.kernel.display().to_string();
    let what = what.to_string();
    move |e| VmmError::InvalidSpec(format!("loading {what} {path}: {e}"))
}

fn mem_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> VmmError {
    move |e| VmmError::Memory(format!("{what}: {e}"))
}

/// Loads kernel, command line, initrd and ACPI tables; writes the boot protocol's
/// structures. Returns where the boot vCPU enters.
pub(crate) fn load(
    mem: &GuestMemoryMmap,
    spec: &VmSpec,
    ram: &[RamRegion],
) -> Result<BootLayout, VmmError> {
    let e820 = e820_map(ram, &crate::kvm::payload::reserved(spec));
    let mut kernel = File::open(&spec.kernel).map_err(|e| VmmError::Os {
        what: "opening the kernel",
        source: e,
    })?;
    let format = kernel_format(&mut kernel).map_err(|e| VmmError::Os {
        what: "reading the kernel",
        source: e,
    })?;

    // The kernel.
    let (kernel_end, loaded) = match format {
        Format::Elf => {
            let r = Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err("ELF kernel", spec))?;
            let PvhBootCapability::PvhEntryPresent(entry) = r.pvh_boot_cap else {
                return Err(VmmError::InvalidSpec(format!(
                    "kernel {} is an ELF without a PVH entry note (build it with CONFIG_PVH=y, or pass the bzImage)",
                    spec.kernel.display()
                )));
            };
            (r.kernel_end, Loaded::Pvh { entry: entry.0 })
        }
        Format::BzImage => {
            let r = BzImage::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err("bzImage", spec))?;
            let hdr = r.setup_header.ok_or_else(|| {
                VmmError::InvalidSpec(format!(
                    "bzImage {} has no setup header",
                    spec.kernel.display()
                ))
            })?;
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(VmmError::InvalidSpec(format!(
                    "bzImage {} has no 64-bit entry (xloadflags lacks XLF_KERNEL_64)",
                    spec.kernel.display()
                )));
            }
            // The kernel decompresses in place up to init_size from its load address.
            let end = r.kernel_end.max(r.kernel_load.0 + u64::from(hdr.init_size));
            (
                end,
                Loaded::BzImage {
                    hdr,
                    load: r.kernel_load.0,
                },
            )
        }
        Format::Unknown => {
            return Err(VmmError::InvalidSpec(format!(
                "kernel {} is neither an ELF vmlinux nor a bzImage",
                spec.kernel.display()
            )));
        }
    };

    // The command line.
    let max_cmdline = setup_header(&loaded)
        .map(|h| (h.cmdline_size as usize).min(CMDLINE_MAX))
        .unwrap_or(CMDLINE_MAX);
    let text = kernel_cmdline(spec);
    let cmdline = Cmdline::try_from(&text, max_cmdline).map_err(|e| {
        VmmError::InvalidSpec(format!("kernel command line ({} bytes): {e}", text.len()))
    })?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| VmmError::InvalidSpec(format!("writing the command line: {e}")))?;

    // The initrd, as high as the kernel allows.
    let initrd = match &spec.initrd {
        None => None,
        Some(path) => {
            let mut f = File::open(path).map_err(|e| VmmError::Os {
                what: "opening the initramfs",
                source: e,
            })?;
            let size = f
                .metadata()
                .map_err(|e| VmmError::Os {
                    what: "reading the initramfs size",
                    source: e,
                })?
                .len();
            let max_end = setup_header(&loaded)
                .map(|h| u64::from(h.initrd_addr_max) + 1)
                .unwrap_or(1 << 32);
            let addr = initrd_address(&e820, size, kernel_end, max_end).ok_or_else(|| {
                VmmError::InvalidSpec(format!(
                    "initramfs {} ({size} bytes) does not fit in guest RAM above the kernel; give the VM more memory",
                    path.display()
                ))
            })?;
            let len = usize::try_from(size).map_err(|_| {
                VmmError::InvalidSpec("initramfs larger than the address space".into())
            })?;
            mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
                .map_err(mem_err("copying the initramfs into guest RAM"))?;
            Some((addr, size))
        }
    };

    // ACPI: the SRAT's memory ranges are exactly the RAM regions of the layout.
    let memory: Vec<MemoryAffinity> = ram
        .iter()
        .map(|r| MemoryAffinity {
            base: r.gpa,
            length: r.size,
            node: r.node,
        })
        .collect();
    let mut config = AcpiConfig::new(&memory);
    config.fadt = fadt_config();
    // KVM's in-kernel PIT raises GSI 0, which KVM's default routing sends to
    // IOAPIC pin 0 (arch/x86/kvm/irq_comm.c, ROUTING_ENTRY2(0)): no IRQ0 -> GSI2
    // override as on a PC chipset, or Linux programs the wrong pin for the timer.
    config.overrides = &[];
    let devices = dsdt_aml();
    config.dsdt_aml = &devices;
    let tables = ktstr_acpi::build(&spec.topology, &config)
        .map_err(|e| VmmError::InvalidSpec(format!("ACPI tables: {e}")))?;
    if let Some((addr, len)) = tables
        .ranges()
        .find(|&(a, l)| a < EBDA_START || a + l > HIMEM_START)
    {
        return Err(VmmError::InvalidSpec(format!(
            "ACPI table at {addr:#x} ({len} bytes) leaves the BIOS area below 1 MiB; the topology is too large"
        )));
    }
    tables
        .write_to(&mut GuestSink(mem))
        .map_err(mem_err("writing the ACPI tables"))?;
    let rsdp = tables.rsdp_address();

    let entry = match loaded {
        Loaded::Pvh { entry } => {
            write_pvh(mem, &e820, rsdp, initrd)?;
            Entry::Pvh {
                entry,
                start_info: PVH_INFO_ADDR,
            }
        }
        Loaded::BzImage { hdr, load } => {
            write_zero_page(mem, hdr, &e820, rsdp, initrd)?;
            Entry::Linux64 {
                entry: load + 0x200,
                boot_params: ZERO_PAGE_ADDR,
            }
        }
    };
    Ok(BootLayout {
        entry,
        rsdp,
        initrd,
    })
}

fn write_pvh(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    rsdp: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), VmmError> {
    if e820.len() > PVH_MEMMAP_MAX {
        return Err(VmmError::InvalidSpec(format!(
            "{} memory map entries; the PVH memory map holds {PVH_MEMMAP_MAX}",
            e820.len()
        )));
    }
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() {
            PVH_MODLIST_ADDR
        } else {
            0
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: rsdp,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        };
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| VmmError::Memory(format!("writing hvm_start_info: {e}")))
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: linux_loader::loader::bootparam::setup_header,
    e820: &[E820Entry],
    rsdp: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), VmmError> {
    let mut params = boot_params::default();
    if e820.len() > params.e820_table.len() {
        return Err(VmmError::InvalidSpec(format!(
            "{} memory map entries; boot_params holds {}",
            e820.len(),
            params.e820_table.len()
        )));
    }
    params.hdr = hdr;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.ext_cmd_line_ptr = (CMDLINE_ADDR >> 32) as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )
    .map_err(|e| VmmError::Memory(format!("writing boot_params: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestRam;
    use ktstr_topology::Topology;

    fn ram_and_spec(kernel: &std::path::Path) -> (GuestRam, VmSpec) {
        let topo: Topology = "2n2l1c1t".parse().expect("topology");
        let topo = topo.with_memory_mib(64).expect("memory");
        let spec = VmSpec::new(kernel, topo);
        let ram = GuestRam::new(&spec.node_memory_bytes()).expect("ram");
        (ram, spec)
    }

    #[test]
    fn a_file_that_is_no_kernel_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = dir.path().join("not-a-kernel");
        std::fs::write(&k, b"#!/bin/sh\necho hi\n").expect("write");
        let (ram, spec) = ram_and_spec(&k);
        let err = load(ram.memory(), &spec, ram.layout()).expect_err("not a kernel");
        assert!(
            err.to_string()
                .contains("neither an ELF vmlinux nor a bzImage"),
            "{err}"
        );
    }

    #[test]
    fn pvh_start_info_memory_map_and_initrd() {
        let elf = ktstr_tiny_guest::pvh_elf().unwrap_or_else(|e| panic!("{e}"));
        let (ram, mut spec) = ram_and_spec(elf);
        let dir = tempfile::tempdir().expect("tempdir");
        let rd = dir.path().join("initrd");
        std::fs::write(&rd, vec![0xa5u8; 10_000]).expect("write");
        spec.initrd = Some(rd);
        let mem = ram.memory();
        let boot = load(mem, &spec, ram.layout()).expect("load");
        let Entry::Pvh { entry, start_info } = boot.entry else {
            panic!(
                "an ELF with the Xen note boots through PVH: {:?}",
                boot.entry
            );
        };
        assert!(entry >= HIMEM_START);
        let info: hvm_start_info = mem.read_obj(GuestAddress(start_info)).expect("start info");
        assert_eq!(
            (info.magic, info.version, info.nr_modules),
            (HVM_START_MAGIC, 1, 1)
        );
        assert_eq!(info.rsdp_paddr, boot.rsdp);
        let module: hvm_modlist_entry = mem
            .read_obj(GuestAddress(info.modlist_paddr))
            .expect("module");
        assert_eq!(Some((module.paddr, module.size)), boot.initrd);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(module.paddr + 9_999))
                .expect("byte"),
            0xa5
        );
        // The initrd sits at the top of RAM (64 MiB), page aligned.
        assert_eq!(module.paddr, (64 << 20) - 12_288);
        let e820 = e820_map(ram.layout(), &[]);
        assert_eq!(info.memmap_entries as usize, e820.len());
        let want = kernel_cmdline(&spec);
        let mut cmdline = vec![0u8; want.len()];
        mem.read_slice(&mut cmdline, GuestAddress(info.cmdline_paddr))
            .expect("cmdline");
        assert_eq!(cmdline, want.as_bytes());
        assert!(want.starts_with("reboot=acpi "), "{want}");
        assert_eq!(
            mem.read_obj::<[u8; 8]>(GuestAddress(boot.rsdp))
                .expect("rsdp"),
            *b"RSD PTR "
        );
    }
}
