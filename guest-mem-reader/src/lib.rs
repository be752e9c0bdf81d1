//! Typed reads of a running guest kernel's memory from the host.
//!
//! The facade's monitor uses it to read runqueues, DSQs and BPF maps through BTF-resolved
//! offsets without touching the guest. This first part: the kernel's symbols, decoded from the
//! stripped image's kallsyms tables and cached beside it.

mod cache;
mod error;
pub mod kallsyms;
mod symbols;

pub use error::{Error, Result};
pub use symbols::{KernelSymbols, Symbol};
