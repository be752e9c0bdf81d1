//! Typed reads of a running guest kernel's memory from the host.
//!
//! The facade's monitor samples runqueues, sched_ext DSQs and a scheduler's BPF globals while
//! the guest runs, without any help from inside it. Everything is generic over vm-memory's
//! [`GuestMemory`](vm_memory::GuestMemory): both VM backends hand guest RAM out that way.
//!
//! - [`KernelSymbols`]: the image's symbols, decoded from its own kallsyms tables
//!   ([`kallsyms`]) once per kernel and cached beside it ([`KernelSymbols::load_or_build`]).
//! - [`AddressLayout`]: KASLR slide, `phys_base`, `page_offset_base`, page-table root — values
//!   the caller gives; the image and the direct map translate by arithmetic, everything else
//!   through a 4- or 5-level page-table walk ([`PageTable`]). A randomized (KASLR) kernel's
//!   slide and `phys_base` come from [`kaslr::locate`], given a vCPU's CR3.
//! - [`GuestKernel`]: bounded reads, symbols, per-CPU variables, typed [`Value`]s that follow
//!   member paths through `ktstr-btf`; runqueue samples and user DSQs ([`RqSample`],
//!   [`DsqInfo`]); BPF maps, their values and a program's globals by name ([`BpfMap`],
//!   [`BpfVar`]).
//! - [`SchedulerDump`]: a failure dump of the scheduler's globals, maps and DSQs, bounded
//!   ([`GuestKernel::scheduler_dump`]).
//!
//! Every read is fallible and every walk bounded: a torn structure, a garbage pointer or a
//! map freed mid-read is an [`Error`] value, never a panic or an endless loop.
//!
//! ```
//! use ktstr_guest_mem::GuestKernel;
//! # let guest = ktstr_guest_mem::testkit::Guest::new();
//! # let (mem, syms, btf, layout) = (&guest.mem, &guest.syms, ktstr_guest_mem::testkit::kernel_btf(), guest.layout);
//! // mem: the VM's GuestMemoryMmap; syms: KernelSymbols::load_or_build(vmlinux, cache)?;
//! // btf: Btf::parse(ktstr_btf::elf::btf_section(&vmlinux_bytes)?)?;
//! // layout: AddressLayout::nokaslr().with_page_table(PageTable::new(cr3, PagingLevels::Four))
//! let kernel = GuestKernel::new(mem, syms, btf, layout)?;
//! let rq = kernel.rq(1)?;                                  // per-CPU `runqueues` of CPU 1
//! assert_eq!(rq.field("nr_running")?.u64()?, 3);
//! assert_eq!(rq.field("curr->comm")?.string()?, "worker-1");
//! assert_eq!(kernel.scheduler_name()?.as_deref(), Some("ktstr_fifo"));
//! assert_eq!(kernel.bpf_var("nr_dispatched")?.as_u64(), Some(40)); // a global of the scheduler
//! # Ok::<(), ktstr_guest_mem::Error>(())
//! ```

mod bpf;
mod cache;
mod dump;
mod error;
pub mod image;
pub mod kallsyms;
pub mod kaslr;
mod kernel;
mod sched;
mod symbols;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;
mod translate;
mod value;
pub mod walk;
mod x86_64;

pub use bpf::{
    BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
    BpfMap, BpfVar, MapBtf,
};
pub use dump::{
    DsqDump, DumpLimits, EntryDump, MapDump, SchedulerDump, SectionDump, SectionError, VarDump,
    map_type_name,
};
pub use error::{Error, Result};
pub use kernel::{GuestKernel, MAX_CPUS, MAX_READ};
pub use sched::{DsqInfo, RqSample};
pub use symbols::{KernelSymbols, Symbol};
pub use translate::{AddressLayout, PAGE_OFFSET_BASE_L4, PAGE_OFFSET_BASE_L5, START_KERNEL_MAP};
pub use value::Value;
pub use x86_64::{PageTable, PagingLevels};
