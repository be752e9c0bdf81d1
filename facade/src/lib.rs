//! ktstr: test Linux process schedulers (sched_ext first) in micro-VMs whose
//! CPU topology is exactly the one a test declares.
//!
//! This is the one crate scheduler authors depend on. Today it provides the
//! kernel handling every other part stands on: resolving which kernel to boot,
//! the local kernel cache, and fetching Debian's sched_ext-enabled kernels.
//!
//! ```no_run
//! // Find the kernel a test would boot: --kernel, KTSTR_KERNEL, or the newest cached one.
//! let kernel = ktstr::kernel::resolve(None)?;
//! println!("booting {}", kernel.vmlinux.display());
//! # Ok::<(), ktstr::kernel::KernelError>(())
//! ```

pub mod kernel;
pub mod shell;

/// The guest root builder (cpio archives, ELF closures, the base cache).
pub use ktstr_initramfs as initramfs;
/// Declared topologies and presets.
pub use ktstr_topology as topology;
/// The VM backends.
pub use ktstr_vmm as vmm;
