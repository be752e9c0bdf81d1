//! The VM backend interface, the QEMU backend, and (later) the purpose-built KVM VMM.
//!
//! The facade's runner describes a VM once — kernel, initramfs, command line,
//! the declared [`Topology`](ktstr_topology::Topology), reserved regions — as a
//! [`VmSpec`], boots it through a [`Backend`] and talks to the running
//! [`Machine`] without knowing which backend runs it: guest physical memory
//! mapped on the host, pause and resume, the serial console as a stream of
//! lines, how the guest ended, kill.
//!
//! This crate moves bytes and runs vCPUs. It knows nothing of tests,
//! schedulers, BTF or the host-guest channel's message format.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use ktstr_topology::Topology;
//! use ktstr_vmm::{Backend, Console, EndReason, QemuBackend, VmSpec};
//!
//! let topology: Topology = "1n2l2c1t".parse()?;
//! let mut spec = VmSpec::new("/path/to/vmlinux", topology);
//! spec.initrd = Some("/path/to/initramfs.cpio".into());
//! spec.cmdline.push_str(" rdinit=/init");
//! let mut vm = QemuBackend::detect()?.boot(&spec)?;
//! let console: Console = vm.take_console().expect("console is captured");
//! while let Some(line) = console.next_line(Duration::from_secs(30)) {
//!     println!("guest: {line}");
//! }
//! match vm.wait(Some(Instant::now() + Duration::from_secs(60)))? {
//!     EndReason::PowerOff => println!("clean power-off"),
//!     other => println!("ended: {other}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod console;
mod error;
mod memory;
pub mod qemu;
mod spec;

pub use backend::{Backend, EndReason, Machine, hardware_virtualization};
pub use console::{Console, ConsoleEvent};
pub use error::VmmError;
pub use memory::{GuestRam, RamRegion, pc_ram_layout};
pub use qemu::QemuBackend;
pub use spec::{ConsoleMode, ReservedRegion, VmSpec};

/// Guest physical memory as the host sees it (vm-memory's mmap-backed collection).
pub use vm_memory::GuestMemoryMmap;
