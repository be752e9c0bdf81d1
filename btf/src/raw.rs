//! On-the-wire BTF records, read through `zerocopy`.
//!
//! Layouts and constants follow the kernel's UAPI header `include/uapi/linux/btf.h`.
//! Only little-endian BTF is read: every field is an explicit little-endian integer,
//! so the structs are byte-aligned (`Unaligned`) and can be borrowed from any offset.

use zerocopy::little_endian::{I32, U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// `BTF_MAGIC` (0xeB9F) as it reads from little-endian data.
pub(crate) const MAGIC: u16 = 0xeb9f;
/// `BTF_MAGIC` as it reads when the data is big-endian.
pub(crate) const MAGIC_SWAPPED: u16 = 0x9feb;
/// `BTF_VERSION`.
pub(crate) const VERSION: u8 = 1;

/// `struct btf_header`.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    pub magic: U16,
    pub version: u8,
    pub flags: u8,
    pub hdr_len: U32,
    pub type_off: U32,
    pub type_len: U32,
    pub str_off: U32,
    pub str_len: U32,
}

/// `struct btf_type`: the 12 bytes every type record starts with.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct TypeHeader {
    pub name_off: U32,
    /// bits 0-15 vlen, 24-28 kind, 31 kind_flag.
    pub info: U32,
    /// `size` for sized kinds, `type` for the kinds that refer to another type.
    pub size_or_type: U32,
}

/// `struct btf_member` (STRUCT, UNION).
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawMember {
    pub name_off: U32,
    pub ty: U32,
    /// Bit offset, or with `kind_flag` set: bitfield size << 24 | bit offset.
    pub offset: U32,
}

/// `struct btf_array`.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawArray {
    pub elem: U32,
    pub index: U32,
    pub nelems: U32,
}

/// `struct btf_enum`.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawEnum {
    pub name_off: U32,
    pub val: I32,
}

/// `struct btf_enum64`.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawEnum64 {
    pub name_off: U32,
    pub lo: U32,
    pub hi: U32,
}

/// `struct btf_param` (FUNC_PROTO).
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawParam {
    pub name_off: U32,
    pub ty: U32,
}

/// `struct btf_var_secinfo` (DATASEC).
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawVarSecinfo {
    pub ty: U32,
    pub offset: U32,
    pub size: U32,
}

/// A single `u32` that follows INT, VAR and DECL_TAG records.
#[derive(Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawU32 {
    pub val: U32,
}
