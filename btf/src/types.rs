//! Validated, borrowed views of single BTF type records.
//!
//! A [`Type`] is a few words: the record's header fields, the bytes that follow it and the
//! string sections. Every accessor reads straight from the BTF bytes; nothing is copied.

use zerocopy::FromBytes;

use crate::raw::{RawArray, RawEnum, RawEnum64, RawMember, RawParam, RawU32, RawVarSecinfo};

/// A BTF type id. Id 0 is `void`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u32);

impl TypeId {
    /// `void`, the type id 0.
    pub const VOID: TypeId = TypeId(0);
}

/// The kind of a BTF type (`BTF_KIND_*` in `include/uapi/linux/btf.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Kind {
    /// Type id 0.
    Void = 0,
    /// Integer (`BTF_KIND_INT`).
    Int = 1,
    /// Pointer.
    Ptr = 2,
    /// Array.
    Array = 3,
    /// Struct.
    Struct = 4,
    /// Union.
    Union = 5,
    /// Enumeration of 32-bit values.
    Enum = 6,
    /// Forward declaration of a struct or union.
    Fwd = 7,
    /// Typedef.
    Typedef = 8,
    /// `volatile` qualifier.
    Volatile = 9,
    /// `const` qualifier.
    Const = 10,
    /// `restrict` qualifier.
    Restrict = 11,
    /// A function (name + prototype).
    Func = 12,
    /// A function prototype.
    FuncProto = 13,
    /// A variable.
    Var = 14,
    /// A data section (`.bss`, `.data`, ...).
    Datasec = 15,
    /// Floating point.
    Float = 16,
    /// `btf_decl_tag` attribute.
    DeclTag = 17,
    /// `btf_type_tag` attribute.
    TypeTag = 18,
    /// Enumeration of 64-bit values.
    Enum64 = 19,
}

impl Kind {
    pub(crate) fn from_raw(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    pub(crate) fn suffix_for_error(self) -> &'static str {
        match self {
            Kind::Struct => " (struct)",
            Kind::Union => " (union)",
            Kind::Enum | Kind::Enum64 => " (enum)",
            Kind::Typedef => " (typedef)",
            Kind::Func => " (function)",
            Kind::Var => " (variable)",
            Kind::Datasec => " (data section)",
            _ => " (of the kind asked)",
        }
    }

    /// Whether `size_or_type` holds a type id for this kind.
    pub(crate) fn has_type_ref(self) -> bool {
        !self.has_size() && !matches!(self, Kind::Void | Kind::Array | Kind::Fwd)
    }

    /// Whether `size_or_type` holds a size for this kind (else it holds a type id).
    pub(crate) fn has_size(self) -> bool {
        matches!(
            self,
            Kind::Int
                | Kind::Struct
                | Kind::Union
                | Kind::Enum
                | Kind::Enum64
                | Kind::Float
                | Kind::Datasec
        )
    }
}

/// Where strings live: a split BTF's offsets first cover its base's string section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strings<'a> {
    pub base: &'a [u8],
    pub own: &'a [u8],
}

impl<'a> Strings<'a> {
    /// The NUL-terminated bytes at `off` (without the NUL); empty if out of range.
    #[inline]
    pub fn bytes(&self, off: u32) -> &'a [u8] {
        let off = off as usize;
        let tail = if off < self.base.len() {
            self.base.get(off..)
        } else {
            self.own.get(off - self.base.len()..)
        };
        let tail = tail.unwrap_or(&[]);
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        tail.get(..end).unwrap_or(&[])
    }

    /// The string at `off`; empty if out of range or not UTF-8 (validation rules both out).
    #[inline]
    pub fn get(&self, off: u32) -> &'a str {
        core::str::from_utf8(self.bytes(off)).unwrap_or("")
    }

    /// Whether the string at `off` equals `s`, without scanning past `s.len() + 1` bytes.
    #[inline]
    pub fn eq(&self, off: u32, s: &[u8]) -> bool {
        let off = off as usize;
        let tail = if off < self.base.len() {
            self.base.get(off..)
        } else {
            self.own.get(off - self.base.len()..)
        };
        // The terminator first: it rules out most candidates without comparing bytes.
        match tail {
            Some(t) => t.get(s.len()) == Some(&0) && t.get(..s.len()) == Some(s),
            None => false,
        }
    }

    /// Whether `off` is the offset of a string.
    pub fn contains(&self, off: u32) -> bool {
        (off as usize) < self.base.len() + self.own.len()
    }
}

/// One validated type record.
#[derive(Debug, Clone, Copy)]
pub struct Type<'a> {
    pub(crate) id: TypeId,
    pub(crate) kind: Kind,
    pub(crate) name_off: u32,
    pub(crate) info: u32,
    pub(crate) size_or_type: u32,
    pub(crate) tail: &'a [u8],
    pub(crate) strings: Strings<'a>,
}

/// A struct or union member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Member name, empty for an anonymous member.
    pub name: &'a str,
    /// Member type.
    pub ty: TypeId,
    /// Offset from the start of the enclosing struct, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits, 0 if the member is not a bitfield.
    pub bitfield_size: u32,
}

/// An INT's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntInfo {
    /// Signed integer.
    pub signed: bool,
    /// `char`.
    pub char: bool,
    /// `_Bool`.
    pub bool: bool,
    /// Bit offset of the value inside the storage (legacy bitfields).
    pub offset: u8,
    /// Number of value bits.
    pub bits: u8,
}

/// An ARRAY's element type and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Element type.
    pub elem: TypeId,
    /// Index type.
    pub index: TypeId,
    /// Number of elements.
    pub nelems: u32,
}

/// One enumerator of an ENUM or ENUM64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enumerator<'a> {
    /// Enumerator name.
    pub name: &'a str,
    /// Its value.
    pub value: EnumValue,
}

/// An enumerator value with its signedness (the enum's `kind_flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnumValue {
    /// The value's 64 bits (sign-extended from 32 bits for a signed ENUM).
    pub raw: u64,
    /// Whether the enum is signed.
    pub signed: bool,
}

impl EnumValue {
    /// The value as a signed integer.
    pub fn as_i64(self) -> i64 {
        self.raw as i64
    }
    /// The value as an unsigned integer.
    pub fn as_u64(self) -> u64 {
        self.raw
    }
}

/// A FUNC_PROTO parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// Parameter name (may be empty).
    pub name: &'a str,
    /// Parameter type.
    pub ty: TypeId,
}

/// One entry of a DATASEC: a variable's place in the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecVar {
    /// The VAR (or FUNC, for `.ksyms`) type id.
    pub ty: TypeId,
    /// Byte offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl<'a> Type<'a> {
    pub(crate) fn void(strings: Strings<'a>) -> Type<'a> {
        Type {
            id: TypeId::VOID,
            kind: Kind::Void,
            name_off: 0,
            info: 0,
            size_or_type: 0,
            tail: &[],
            strings,
        }
    }

    /// This type's id.
    pub fn id(&self) -> TypeId {
        self.id
    }
    /// This type's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The name, empty for an anonymous type.
    pub fn name(&self) -> &'a str {
        self.strings.get(self.name_off)
    }
    /// `vlen`: number of members, parameters, enumerators or section entries.
    pub fn vlen(&self) -> u16 {
        (self.info & 0xffff) as u16
    }
    /// `kind_flag`: bitfield encoding for structs, union-ness for FWD, signedness for enums.
    pub fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
    /// Size in bytes, for the kinds that carry one (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC).
    pub fn size(&self) -> Option<u32> {
        self.kind.has_size().then_some(self.size_or_type)
    }
    /// The type this one refers to: target of PTR, TYPEDEF, qualifiers and tags, the prototype of a
    /// FUNC, the type of a VAR, the return type of a FUNC_PROTO.
    pub fn referenced(&self) -> Option<TypeId> {
        self.kind
            .has_type_ref()
            .then_some(TypeId(self.size_or_type))
    }

    /// INT encoding, for an INT.
    pub fn int(&self) -> Option<IntInfo> {
        if self.kind != Kind::Int {
            return None;
        }
        let v = RawU32::ref_from_prefix(self.tail).ok()?.0.val.get();
        Some(IntInfo {
            signed: v & (1 << 24) != 0,
            char: v & (2 << 24) != 0,
            bool: v & (4 << 24) != 0,
            offset: ((v >> 16) & 0xff) as u8,
            bits: (v & 0xff) as u8,
        })
    }

    /// Element type and length, for an ARRAY.
    pub fn array(&self) -> Option<ArrayInfo> {
        if self.kind != Kind::Array {
            return None;
        }
        let a = RawArray::ref_from_prefix(self.tail).ok()?.0;
        Some(ArrayInfo {
            elem: TypeId(a.elem.get()),
            index: TypeId(a.index.get()),
            nelems: a.nelems.get(),
        })
    }

    /// Members, for a STRUCT or UNION (empty otherwise).
    pub fn members(&self) -> Members<'a> {
        let raw: &'a [RawMember] = if matches!(self.kind, Kind::Struct | Kind::Union) {
            <[RawMember]>::ref_from_bytes(self.tail).unwrap_or(&[])
        } else {
            &[]
        };
        Members {
            raw: raw.iter(),
            kind_flag: self.kind_flag(),
            strings: self.strings,
        }
    }

    /// Enumerators, for an ENUM or ENUM64 (empty otherwise).
    pub fn enumerators(&self) -> Enumerators<'a> {
        let signed = self.kind_flag();
        let inner = match self.kind {
            Kind::Enum => {
                EnumIter::E32(<[RawEnum]>::ref_from_bytes(self.tail).unwrap_or(&[]).iter())
            }
            Kind::Enum64 => EnumIter::E64(
                <[RawEnum64]>::ref_from_bytes(self.tail)
                    .unwrap_or(&[])
                    .iter(),
            ),
            _ => EnumIter::E32([].iter()),
        };
        Enumerators {
            inner,
            signed,
            strings: self.strings,
        }
    }

    /// Parameters, for a FUNC_PROTO (empty otherwise). A variadic prototype ends with a
    /// parameter of type void and no name.
    pub fn params(&self) -> Params<'a> {
        let raw: &'a [RawParam] = if self.kind == Kind::FuncProto {
            <[RawParam]>::ref_from_bytes(self.tail).unwrap_or(&[])
        } else {
            &[]
        };
        Params {
            raw: raw.iter(),
            strings: self.strings,
        }
    }

    /// Entries, for a DATASEC (empty otherwise).
    pub fn sec_vars(&self) -> SecVars<'a> {
        let raw: &'a [RawVarSecinfo] = if self.kind == Kind::Datasec {
            <[RawVarSecinfo]>::ref_from_bytes(self.tail).unwrap_or(&[])
        } else {
            &[]
        };
        SecVars { raw: raw.iter() }
    }

    /// Linkage (0 static, 1 global, 2 extern), for a VAR; for a FUNC, the linkage is in `vlen`.
    pub fn linkage(&self) -> Option<u32> {
        match self.kind {
            Kind::Var => Some(RawU32::ref_from_prefix(self.tail).ok()?.0.val.get()),
            Kind::Func => Some(u32::from(self.vlen())),
            _ => None,
        }
    }

    /// Member or parameter index a DECL_TAG applies to (`None` for the whole declaration).
    pub fn decl_tag_component(&self) -> Option<i32> {
        if self.kind != Kind::DeclTag {
            return None;
        }
        let v = RawU32::ref_from_prefix(self.tail).ok()?.0.val.get() as i32;
        (v >= 0).then_some(v)
    }
}

/// Iterator over a struct's or union's members.
#[derive(Debug, Clone)]
pub struct Members<'a> {
    raw: core::slice::Iter<'a, RawMember>,
    kind_flag: bool,
    strings: Strings<'a>,
}

impl<'a> Iterator for Members<'a> {
    type Item = Member<'a>;
    fn next(&mut self) -> Option<Member<'a>> {
        let m = self.raw.next()?;
        let (bit_offset, bitfield_size) = member_offset(self.kind_flag, m.offset.get());
        Some(Member {
            name: self.strings.get(m.name_off.get()),
            ty: TypeId(m.ty.get()),
            bit_offset,
            bitfield_size,
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

/// Split a member's `offset` field into (bit offset, bitfield size).
#[inline]
pub(crate) fn member_offset(kind_flag: bool, raw: u32) -> (u32, u32) {
    if kind_flag {
        (raw & 0x00ff_ffff, raw >> 24)
    } else {
        (raw, 0)
    }
}

#[derive(Debug, Clone)]
enum EnumIter<'a> {
    E32(core::slice::Iter<'a, RawEnum>),
    E64(core::slice::Iter<'a, RawEnum64>),
}

/// Iterator over an enum's enumerators.
#[derive(Debug, Clone)]
pub struct Enumerators<'a> {
    inner: EnumIter<'a>,
    signed: bool,
    strings: Strings<'a>,
}

impl<'a> Iterator for Enumerators<'a> {
    type Item = Enumerator<'a>;
    fn next(&mut self) -> Option<Enumerator<'a>> {
        let (name_off, raw) = match &mut self.inner {
            EnumIter::E32(it) => {
                let e = it.next()?;
                let v = e.val.get();
                let raw = if self.signed {
                    i64::from(v) as u64
                } else {
                    u64::from(v as u32)
                };
                (e.name_off.get(), raw)
            }
            EnumIter::E64(it) => {
                let e = it.next()?;
                (
                    e.name_off.get(),
                    u64::from(e.hi.get()) << 32 | u64::from(e.lo.get()),
                )
            }
        };
        Some(Enumerator {
            name: self.strings.get(name_off),
            value: EnumValue {
                raw,
                signed: self.signed,
            },
        })
    }
}

/// Iterator over a prototype's parameters.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    raw: core::slice::Iter<'a, RawParam>,
    strings: Strings<'a>,
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let p = self.raw.next()?;
        Some(Param {
            name: self.strings.get(p.name_off.get()),
            ty: TypeId(p.ty.get()),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

impl ExactSizeIterator for Params<'_> {}

/// Iterator over a DATASEC's entries.
#[derive(Debug, Clone)]
pub struct SecVars<'a> {
    raw: core::slice::Iter<'a, RawVarSecinfo>,
}

impl Iterator for SecVars<'_> {
    type Item = SecVar;
    fn next(&mut self) -> Option<SecVar> {
        let v = self.raw.next()?;
        Some(SecVar {
            ty: TypeId(v.ty.get()),
            offset: v.offset.get(),
            size: v.size.get(),
        })
    }
}
