//! x86-64 specifics of the *guest*: its page tables. The walk is pure computation over guest
//! physical memory, so it compiles and is tested on any host (the guest architecture is what
//! matters here, not the host's); an aarch64 guest would get a sibling module.

mod paging;

pub use paging::{PageTable, PagingLevels};
pub(crate) use paging::{mapped_bytes, walk};
