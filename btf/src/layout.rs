//! Sizes, alignments and member offsets by dotted path.
//!
//! Every walk is bounded: at most [`MAX_DEPTH`] hops through typedefs, qualifiers, arrays and
//! nested anonymous members, and at most [`BUDGET`] members visited per query, so BTF with
//! reference cycles or an exponential web of nested structs gives [`BtfError::TooDeep`].

use alloc::string::{String, ToString};

use crate::btf::Btf;
use crate::error::BtfError;
use crate::raw::RawMember;
use crate::types::{Kind, Member, Type, TypeId, member_offset};

/// Longest chain of typedefs, qualifiers, arrays or anonymous members followed.
pub(crate) const MAX_DEPTH: u32 = 64;
/// Most members one query visits.
pub(crate) const BUDGET: u32 = 1 << 20;
/// Pointer size: the BTF this crate reads is 64-bit kernels' and BPF programs'.
pub(crate) const PTR_SIZE: u64 = 8;

/// Where a member lives, as found by [`Btf::member`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's type (unresolved: may be a typedef).
    pub ty: TypeId,
    /// Offset from the start of the outer type, in bits.
    pub bit_offset: u64,
    /// Bitfield width in bits; 0 if the member is not a bitfield.
    pub bitfield_size: u32,
}

impl MemberInfo {
    /// Offset in bytes (of the byte holding the first bit, for a bitfield).
    pub fn byte_offset(&self) -> u64 {
        self.bit_offset / 8
    }
    /// Whether the member is a bitfield.
    pub fn is_bitfield(&self) -> bool {
        self.bitfield_size != 0
    }
}

/// Alignment of an integer, enum or float of `size` bytes, as the x86-64 and BPF ABIs have it.
pub(crate) fn scalar_align(size: u64) -> u64 {
    if size.is_power_of_two() && size <= 16 {
        size
    } else {
        1
    }
}

impl<'a> Btf<'a> {
    /// Follow typedefs, qualifiers (`const`, `volatile`, `restrict`) and type tags to the type
    /// underneath.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// use ktstr_btf::{Btf, Kind};
    /// let btf = Btf::parse(&bytes)?;
    /// let u64_id = btf.find_kind("u64", Kind::Typedef).expect("present");
    /// assert_eq!(btf.resolve(u64_id)?.kind(), Kind::Int);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn resolve(&self, id: TypeId) -> Result<Type<'a>, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let t = self.ty(cur)?;
            match t.kind() {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    cur = TypeId(t.size_or_type);
                }
                _ => return Ok(t),
            }
        }
        Err(BtfError::TooDeep { id: id.0 })
    }

    /// Size in bytes of a type: what `sizeof` gives in C. Pointers are 8 bytes.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let rq = btf.find("rq").expect("present");
    /// assert_eq!(btf.size_of(rq)?, 64);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn size_of(&self, id: TypeId) -> Result<u64, BtfError> {
        let mut cur = id;
        let mut mult: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let t = self.ty(cur)?;
            let no_size = || BtfError::NoSize {
                id: cur.0,
                kind: t.kind(),
            };
            match t.kind() {
                k if k.has_size() => {
                    return mult
                        .checked_mul(u64::from(t.size_or_type))
                        .ok_or_else(no_size);
                }
                Kind::Ptr => return mult.checked_mul(PTR_SIZE).ok_or_else(no_size),
                Kind::Array => {
                    let a = t.array().ok_or_else(no_size)?;
                    mult = mult.checked_mul(u64::from(a.nelems)).ok_or_else(no_size)?;
                    cur = a.elem;
                }
                Kind::Typedef
                | Kind::Const
                | Kind::Volatile
                | Kind::Restrict
                | Kind::TypeTag
                | Kind::Var => cur = TypeId(t.size_or_type),
                _ => return Err(no_size()),
            }
        }
        Err(BtfError::TooDeep { id: id.0 })
    }

    /// Alignment in bytes of a type, as far as BTF tells: the natural alignment of its members.
    /// BTF does not record `__aligned(N)` attributes, so a cache-line-aligned struct reports the
    /// alignment of its widest member. A packed struct (a member or the size not aligned)
    /// reports 1, as libbpf's `btf__align_of` does.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let rq = btf.find("rq").expect("present");
    /// assert_eq!(btf.align_of(rq)?, 8);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn align_of(&self, id: TypeId) -> Result<u64, BtfError> {
        let mut budget = BUDGET;
        self.align_inner(id, 0, &mut budget)
    }

    /// Whether a struct or union needs `__attribute__((packed))` to get its BTF layout in C.
    pub fn is_packed(&self, id: TypeId) -> Result<bool, BtfError> {
        let mut budget = BUDGET;
        let t = self.resolve(id)?;
        Ok(self.composite_align(t, 0, &mut budget)?.1)
    }

    fn align_inner(&self, id: TypeId, depth: u32, budget: &mut u32) -> Result<u64, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id: id.0 });
        }
        let t = self.resolve(id)?;
        match t.kind() {
            Kind::Int | Kind::Float | Kind::Enum | Kind::Enum64 => {
                Ok(scalar_align(u64::from(t.size_or_type)))
            }
            Kind::Ptr => Ok(PTR_SIZE),
            Kind::Array => {
                let a = t.array().ok_or(BtfError::NoSize {
                    id: id.0,
                    kind: Kind::Array,
                })?;
                self.align_inner(a.elem, depth + 1, budget)
            }
            Kind::Struct | Kind::Union => {
                let (align, packed) = self.composite_align(t, depth, budget)?;
                Ok(if packed { 1 } else { align })
            }
            kind => Err(BtfError::NoSize { id: id.0, kind }),
        }
    }

    /// (natural alignment of the members, whether the layout needs packing).
    fn composite_align(
        &self,
        t: Type<'a>,
        depth: u32,
        budget: &mut u32,
    ) -> Result<(u64, bool), BtfError> {
        if !matches!(t.kind(), Kind::Struct | Kind::Union) {
            return Err(BtfError::WrongKind {
                id: t.id().0,
                expected: "a struct or union",
                found: t.kind(),
            });
        }
        let mut max = 1u64;
        let mut packed = false;
        for m in t.members() {
            *budget = budget
                .checked_sub(1)
                .ok_or(BtfError::TooDeep { id: t.id().0 })?;
            let a = self.align_inner(m.ty, depth + 1, budget)?;
            max = max.max(a);
            if m.bitfield_size == 0
                && !self.is_legacy_bitfield(m.ty)
                && u64::from(m.bit_offset) % (a * 8) != 0
            {
                packed = true;
            }
        }
        if u64::from(t.size_or_type) % max != 0 {
            packed = true;
        }
        Ok((max, packed))
    }

    /// A member whose type is an INT narrower than its storage is a bitfield in the old
    /// encoding (struct `kind_flag` clear).
    fn is_legacy_bitfield(&self, ty: TypeId) -> bool {
        self.legacy_bitfield(ty).is_some()
    }

    /// (bit offset inside the storage, bits) of an old-style bitfield INT.
    fn legacy_bitfield(&self, ty: TypeId) -> Option<(u32, u32)> {
        let t = self.resolve(ty).ok()?;
        let i = t.int()?;
        let bits = u32::from(i.bits);
        (u32::from(i.offset) != 0 || bits != t.size_or_type.saturating_mul(8))
            .then_some((u32::from(i.offset), bits))
    }

    /// Offset (bits and bytes) of a member, by dotted path from a struct or union named
    /// `ty_name`. The path goes through typedefs, qualifiers, nested structs, anonymous struct
    /// and union members, and array elements written `name[i]`. It does not follow pointers.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let m = btf.member("rq", "scx.local_dsq.nr")?;
    /// assert_eq!(m.byte_offset(), 24);
    /// let f = btf.member("task_struct", "flags_bits")?; // a 3-bit bitfield
    /// assert_eq!((f.bit_offset, f.bitfield_size), (69, 3));
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn member(&self, ty_name: &str, path: &str) -> Result<MemberInfo, BtfError> {
        let id = self.composite(ty_name)?;
        self.member_of(id, path)
    }

    /// The struct or union named `name`, or failing that a typedef of one.
    pub fn composite(&self, name: &str) -> Result<TypeId, BtfError> {
        let mut fallback = None;
        for id in self.find_all(name) {
            let t = self.ty(id)?;
            match t.kind() {
                Kind::Struct | Kind::Union => return Ok(id),
                Kind::Typedef
                    if fallback.is_none()
                        && self
                            .resolve(id)
                            .is_ok_and(|r| matches!(r.kind(), Kind::Struct | Kind::Union)) =>
                {
                    fallback = Some(id);
                }
                _ => {}
            }
        }
        fallback.ok_or_else(|| BtfError::NoSuchType {
            name: name.to_string(),
            kind: Some(Kind::Struct),
        })
    }

    /// [`Btf::member`] starting from a type id.
    pub fn member_of(&self, id: TypeId, path: &str) -> Result<MemberInfo, BtfError> {
        let bad = |what: &'static str| BtfError::BadPath {
            path: path.to_string(),
            what,
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        let mut budget = BUDGET;
        let mut cur = self.resolve(id)?;
        let mut info = MemberInfo {
            ty: id,
            bit_offset: 0,
            bitfield_size: 0,
        };
        for comp in path.split('.') {
            let (name, indices) = split_indices(comp).ok_or_else(|| bad("bad component"))?;
            if !matches!(cur.kind(), Kind::Struct | Kind::Union) {
                return Err(match cur.kind() {
                    Kind::Ptr => bad("it steps through a pointer, which offsets cannot follow"),
                    _ => bad("it steps into a type that is not a struct or union"),
                });
            }
            let (off, bf, ty) = self
                .find_member(cur, name.as_bytes(), 0, &mut budget)?
                .ok_or_else(|| BtfError::NoSuchMember {
                    ty: self.describe(cur),
                    member: name.to_string(),
                })?;
            info.bit_offset = info
                .bit_offset
                .checked_add(off)
                .ok_or_else(|| bad("the offset overflows"))?;
            info.bitfield_size = bf;
            info.ty = ty;
            cur = self.resolve(ty)?;
            for idx in indices {
                let idx = idx.ok_or_else(|| bad("bad array index"))?;
                let a = cur
                    .array()
                    .ok_or_else(|| bad("it indexes a member that is not an array"))?;
                let elem_bits = self.size_of(a.elem)?.saturating_mul(8);
                let add = elem_bits
                    .checked_mul(idx)
                    .ok_or_else(|| bad("the offset overflows"))?;
                info.bit_offset = info
                    .bit_offset
                    .checked_add(add)
                    .ok_or_else(|| bad("the offset overflows"))?;
                info.ty = a.elem;
                info.bitfield_size = 0;
                cur = self.resolve(a.elem)?;
            }
        }
        Ok(info)
    }

    /// Search `t`'s members for `name`, descending into anonymous struct/union members.
    /// Returns (bit offset, bitfield size, type).
    fn find_member(
        &self,
        t: Type<'a>,
        name: &[u8],
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<(u64, u32, TypeId)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id: t.id().0 });
        }
        let kf = t.kind_flag();
        let strings = t.strings;
        for m in t.raw_members() {
            *budget = budget
                .checked_sub(1)
                .ok_or(BtfError::TooDeep { id: t.id().0 })?;
            let name_off = m.name_off.get();
            if name_off == 0 {
                let inner = self.resolve(TypeId(m.ty.get()))?;
                if matches!(inner.kind(), Kind::Struct | Kind::Union)
                    && let Some((off, bf, ty)) = self.find_member(inner, name, depth + 1, budget)?
                {
                    let (base, _) = member_offset(kf, m.offset.get());
                    return Ok(Some((off + u64::from(base), bf, ty)));
                }
            } else if strings.eq(name_off, name) {
                return Ok(Some(self.member_place(kf, m)));
            }
        }
        Ok(None)
    }

    fn member_place(&self, kf: bool, m: &RawMember) -> (u64, u32, TypeId) {
        let ty = TypeId(m.ty.get());
        let (off, bf) = member_offset(kf, m.offset.get());
        if bf == 0
            && !kf
            && let Some((bit_off, bits)) = self.legacy_bitfield(ty)
        {
            return (u64::from(off) + u64::from(bit_off), bits, ty);
        }
        (u64::from(off), bf, ty)
    }

    /// (bit offset, bitfield size) of a member, reading old-style INT bitfields too.
    pub(crate) fn member_bits(&self, kind_flag: bool, m: Member<'_>) -> (u64, u32) {
        if m.bitfield_size == 0
            && !kind_flag
            && let Some((bit_off, bits)) = self.legacy_bitfield(m.ty)
        {
            return (u64::from(m.bit_offset) + u64::from(bit_off), bits);
        }
        (u64::from(m.bit_offset), m.bitfield_size)
    }

    /// "struct rq", "union foo", "anonymous struct 42": for error messages.
    pub(crate) fn describe(&self, t: Type<'a>) -> String {
        let what = match t.kind() {
            Kind::Union => "union",
            _ => "struct",
        };
        if t.name().is_empty() {
            alloc::format!("anonymous {what} {}", t.id().0)
        } else {
            alloc::format!("{what} {}", t.name())
        }
    }
}

/// Split `name[1][2]` into the name and its indices.
fn split_indices(comp: &str) -> Option<(&str, impl Iterator<Item = Option<u64>> + '_)> {
    let (name, rest) = match comp.find('[') {
        Some(i) => (comp.get(..i)?, comp.get(i..)?),
        None => (comp, ""),
    };
    if name.is_empty() {
        return None;
    }
    if !rest.is_empty() && !rest.ends_with(']') {
        return None;
    }
    let inner = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    let parts = inner
        .into_iter()
        .flat_map(|s| s.split("]["))
        .map(|p| p.parse::<u64>().ok());
    Some((name, parts))
}
