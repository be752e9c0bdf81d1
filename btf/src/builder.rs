//! A small BTF writer, for tests and tools that need synthetic BTF (fixtures, fuzz seeds,
//! property tests of the parser).
//!
//! It writes what it is told: ids are handed out in order, and references to ids not yet
//! written are allowed (validation happens when the result is parsed).

use alloc::vec::Vec;

use crate::btf::Btf;
use crate::types::{Kind, TypeId};

/// Builds base or split BTF, little-endian.
///
/// ```
/// use ktstr_btf::{Btf, BtfBuilder};
/// let mut b = BtfBuilder::new();
/// let int = b.int("int", 4, true);
/// let s = b.struct_type("pair", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
/// let bytes = b.finish();
/// let btf = Btf::parse(&bytes)?;
/// assert_eq!(btf.member("pair", "b")?.byte_offset(), 4);
/// assert_eq!(btf.size_of(s)?, 8);
/// # Ok::<(), ktstr_btf::BtfError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    str_base: u32,
    next_id: u32,
}

impl Default for BtfBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BtfBuilder {
    /// A builder for base BTF (ids from 1).
    pub fn new() -> Self {
        BtfBuilder {
            types: Vec::new(),
            strings: alloc::vec![0],
            str_base: 0,
            next_id: 1,
        }
    }

    /// A builder for split BTF on top of `base`.
    pub fn new_split(base: &Btf<'_>) -> Self {
        BtfBuilder {
            types: Vec::new(),
            strings: alloc::vec![0],
            str_base: base.strings().own.len() as u32,
            next_id: base.type_count(),
        }
    }

    /// The id the next type will get.
    pub fn next_id(&self) -> TypeId {
        TypeId(self.next_id)
    }

    /// Add a string; returns its offset (0 for the empty string).
    pub fn add_str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn put(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a raw record header: any kind number, any `vlen`. The caller appends the tail
    /// with [`BtfBuilder::raw_u32`].
    pub fn raw_header(
        &mut self,
        name: &str,
        kind: u8,
        kind_flag: bool,
        vlen: u16,
        size_or_type: u32,
    ) -> TypeId {
        let name_off = self.add_str(name);
        let info = (u32::from(kind_flag) << 31) | (u32::from(kind & 0x1f) << 24) | u32::from(vlen);
        self.put(name_off);
        self.put(info);
        self.put(size_or_type);
        let id = TypeId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Append a raw little-endian word to the type section.
    pub fn raw_u32(&mut self, v: u32) {
        self.put(v);
    }

    fn header(&mut self, name: &str, kind: Kind, kind_flag: bool, vlen: usize, st: u32) -> TypeId {
        self.raw_header(name, kind as u8, kind_flag, vlen as u16, st)
    }

    /// An INT of `size` bytes using all its bits.
    pub fn int(&mut self, name: &str, size: u32, signed: bool) -> TypeId {
        let id = self.header(name, Kind::Int, false, 0, size);
        let enc = (u32::from(signed) << 24) | (size * 8).min(128);
        self.put(enc);
        id
    }

    /// An INT with an explicit encoding (signed/char/bool bits, bit offset, bits).
    pub fn int_encoded(
        &mut self,
        name: &str,
        size: u32,
        encoding: u8,
        offset: u8,
        bits: u8,
    ) -> TypeId {
        let id = self.header(name, Kind::Int, false, 0, size);
        self.put((u32::from(encoding) << 24) | (u32::from(offset) << 16) | u32::from(bits));
        id
    }

    /// A FLOAT.
    pub fn float(&mut self, name: &str, size: u32) -> TypeId {
        self.header(name, Kind::Float, false, 0, size)
    }

    /// A PTR, TYPEDEF, qualifier or TYPE_TAG: any kind that only refers to `target`.
    pub fn reference(&mut self, kind: Kind, name: &str, target: TypeId) -> TypeId {
        self.header(name, kind, false, 0, target.0)
    }

    /// A pointer to `target`.
    pub fn ptr(&mut self, target: TypeId) -> TypeId {
        self.reference(Kind::Ptr, "", target)
    }

    /// A typedef.
    pub fn typedef(&mut self, name: &str, target: TypeId) -> TypeId {
        self.reference(Kind::Typedef, name, target)
    }

    /// An array of `nelems` elements.
    pub fn array(&mut self, elem: TypeId, index: TypeId, nelems: u32) -> TypeId {
        let id = self.header("", Kind::Array, false, 0, 0);
        self.put(elem.0);
        self.put(index.0);
        self.put(nelems);
        id
    }

    /// A struct: members are (name, type, bit offset, bitfield size or 0).
    pub fn struct_type(
        &mut self,
        name: &str,
        size: u32,
        members: &[(&str, TypeId, u32, u32)],
    ) -> TypeId {
        self.composite(Kind::Struct, name, size, members)
    }

    /// A union: members as for [`BtfBuilder::struct_type`].
    pub fn union_type(
        &mut self,
        name: &str,
        size: u32,
        members: &[(&str, TypeId, u32, u32)],
    ) -> TypeId {
        self.composite(Kind::Union, name, size, members)
    }

    fn composite(
        &mut self,
        kind: Kind,
        name: &str,
        size: u32,
        members: &[(&str, TypeId, u32, u32)],
    ) -> TypeId {
        let kf = members.iter().any(|m| m.3 != 0);
        let id = self.header(name, kind, kf, members.len(), size);
        for &(n, ty, off, bf) in members {
            let no = self.add_str(n);
            self.put(no);
            self.put(ty.0);
            self.put(if kf {
                (bf << 24) | (off & 0x00ff_ffff)
            } else {
                off
            });
        }
        id
    }

    /// A 32-bit ENUM of `size` bytes.
    pub fn enum_type(
        &mut self,
        name: &str,
        size: u32,
        signed: bool,
        values: &[(&str, i32)],
    ) -> TypeId {
        let id = self.header(name, Kind::Enum, signed, values.len(), size);
        for &(n, v) in values {
            let no = self.add_str(n);
            self.put(no);
            self.put(v as u32);
        }
        id
    }

    /// An ENUM64.
    pub fn enum64_type(
        &mut self,
        name: &str,
        size: u32,
        signed: bool,
        values: &[(&str, u64)],
    ) -> TypeId {
        let id = self.header(name, Kind::Enum64, signed, values.len(), size);
        for &(n, v) in values {
            let no = self.add_str(n);
            self.put(no);
            self.put(v as u32);
            self.put((v >> 32) as u32);
        }
        id
    }

    /// A forward declaration (`union_fwd` for `union name;`).
    pub fn fwd(&mut self, name: &str, union_fwd: bool) -> TypeId {
        self.header(name, Kind::Fwd, union_fwd, 0, 0)
    }

    /// A FUNC_PROTO with (name, type) parameters; a last `("", TypeId::VOID)` means `...`.
    pub fn func_proto(&mut self, ret: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let id = self.header("", Kind::FuncProto, false, params.len(), ret.0);
        for &(n, ty) in params {
            let no = self.add_str(n);
            self.put(no);
            self.put(ty.0);
        }
        id
    }

    /// A FUNC (linkage 0 static, 1 global, 2 extern).
    pub fn func(&mut self, name: &str, proto: TypeId, linkage: u16) -> TypeId {
        self.header(name, Kind::Func, false, usize::from(linkage), proto.0)
    }

    /// A VAR.
    pub fn var(&mut self, name: &str, ty: TypeId, linkage: u32) -> TypeId {
        let id = self.header(name, Kind::Var, false, 0, ty.0);
        self.put(linkage);
        id
    }

    /// A DATASEC: entries are (VAR id, offset, size).
    pub fn datasec(&mut self, name: &str, size: u32, vars: &[(TypeId, u32, u32)]) -> TypeId {
        let id = self.header(name, Kind::Datasec, false, vars.len(), size);
        for &(ty, off, sz) in vars {
            self.put(ty.0);
            self.put(off);
            self.put(sz);
        }
        id
    }

    /// A DECL_TAG on `target` (component -1 for the whole declaration).
    pub fn decl_tag(&mut self, value: &str, target: TypeId, component: i32) -> TypeId {
        let id = self.header(value, Kind::DeclTag, false, 0, target.0);
        self.put(component as u32);
        id
    }

    /// The BTF bytes: header, types, strings.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.types.len() + self.strings.len());
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
