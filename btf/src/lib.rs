//! Zero-copy parser and query engine for BTF, the kernel's BPF Type Format.
//!
//! Host side of the flow: the monitor, the BPF map reader, the probe decoder and the BPF
//! scheduler build ask this crate where a field lives, how big a type is, what an enumerator's
//! value is, what a function's parameters are, and for a `vmlinux.h`. Callers answer questions
//! by name and dotted path; they never walk raw type records.
//!
//! [`Btf::parse`] validates everything once (header, section bounds, every record's length,
//! kind, string offsets and type ids) and builds a name index; the records stay in the caller's
//! bytes. No input makes the parser or a query panic, loop forever or allocate more than a small
//! multiple of the input.
//!
//! ```
//! use ktstr_btf::Btf;
//! # let bytes = ktstr_btf::testdata::tiny();
//! // let bytes = std::fs::read("/sys/kernel/btf/vmlinux")?;
//! let btf = Btf::parse(&bytes)?;
//! let nr = btf.member("rq", "scx.local_dsq.nr")?;
//! assert_eq!(nr.byte_offset(), 24);
//! assert_eq!(btf.size_of(nr.ty)?, 4);
//! assert_eq!(btf.enum_value("SCX_DSQ_GLOBAL")?.as_u64(), (1 << 63) | 1);
//! # Ok::<(), ktstr_btf::BtfError>(())
//! ```
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod btf;
mod builder;
pub mod c_dump;
mod decode;
#[cfg(feature = "std")]
pub mod elf;
mod error;
pub mod ext;
mod index;
mod layout;
mod query;
mod raw;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testdata;
mod types;

pub use btf::Btf;
pub use builder::BtfBuilder;
pub use decode::{CpuList, DecodeLimits, Decoded, Field};
pub use error::BtfError;
pub use layout::MemberInfo;
pub use query::{DatasecVar, FuncSig};
pub use types::{
    ArrayInfo, EnumValue, Enumerator, Enumerators, IntInfo, Kind, Member, Members, Param, Params,
    SecVar, SecVars, Type, TypeId,
};
