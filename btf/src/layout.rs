//! Sizes, alignments and member offsets by dotted path.
//!
//! Every walk is bounded: at most [`MAX_DEPTH`] hops through typedefs, qualifiers, arrays and
//! nested anonymous members, and at most [`BUDGET`] members visited per query, so BTF with
//! reference cycles or an exponential web of nested structs gives [`BtfError::TooDeep`].

use alloc::string::{String, ToString};

use crate::btf::Btf;
use crate::error::BtfError;
use zerocopy::FromBytes;

use crate::btf::Rec;
use crate::raw::{RawArray, RawMember, RawU32};
use crate::types::{Kind, Member, Type, TypeId, member_offset};

// Raw kind numbers (`BTF_KIND_*`) for the paths that work on raw records.
const INT: u32 = Kind::Int as u32;
const PTR: u32 = Kind::Ptr as u32;
const ARRAY: u32 = Kind::Array as u32;
const STRUCT: u32 = Kind::Struct as u32;
const UNION: u32 = Kind::Union as u32;
const TYPEDEF: u32 = Kind::Typedef as u32;
const VOLATILE: u32 = Kind::Volatile as u32;
const CONST: u32 = Kind::Const as u32;
const RESTRICT: u32 = Kind::Restrict as u32;
const TYPE_TAG: u32 = Kind::TypeTag as u32;

/// Longest chain of typedefs, qualifiers, arrays or anonymous members followed.
pub(crate) const MAX_DEPTH: u32 = 64;
/// Most members one query visits.
pub(crate) const BUDGET: u32 = 1 << 18;
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
    #[inline]
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
                .ok_or_else(|| BtfError::TooDeep { id: t.id().0 })?;
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
            let t = self.rec(id.0).ok_or_else(|| self.id_error(id))?;
            match t.kind() {
                STRUCT | UNION => return Ok(id),
                TYPEDEF
                    if fallback.is_none()
                        && self
                            .resolve_rec(id.0)
                            .is_some_and(|r| matches!(r.kind(), STRUCT | UNION)) =>
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
        let mut cur = self
            .resolve_rec(id.0)
            .ok_or_else(|| self.resolve_error(id))?;
        let mut info = MemberInfo {
            ty: id,
            bit_offset: 0,
            bitfield_size: 0,
        };
        for comp in path.split('.') {
            let (name, indices) = split_indices(comp).ok_or_else(|| bad("bad component"))?;
            match cur.kind() {
                STRUCT | UNION => {}
                PTR => {
                    return Err(bad(
                        "it steps through a pointer, which offsets cannot follow",
                    ));
                }
                _ => return Err(bad("it steps into a type that is not a struct or union")),
            }
            let (mut off, mut bf, ty, kf) = self
                .find_member(cur, name.as_bytes(), 0, &mut budget)?
                .ok_or_else(|| BtfError::NoSuchMember {
                    ty: self
                        .ty(TypeId(cur.id))
                        .map(|t| self.describe(t))
                        .unwrap_or_default(),
                    member: name.to_string(),
                })?;
            cur = self
                .resolve_rec(ty.0)
                .ok_or_else(|| self.resolve_error(ty))?;
            // Old encoding (no kind_flag): a bitfield is an INT narrower than its storage.
            if !kf
                && bf == 0
                && cur.kind() == INT
                && let Ok((enc, _)) = RawU32::ref_from_prefix(cur.tail)
            {
                let enc = enc.val.get();
                let (bits, bit_off) = (enc & 0xff, (enc >> 16) & 0xff);
                if bit_off != 0 || bits != cur.st.saturating_mul(8) {
                    off += u64::from(bit_off);
                    bf = bits;
                }
            }
            info.bit_offset = info
                .bit_offset
                .checked_add(off)
                .ok_or_else(|| bad("the offset overflows"))?;
            info.bitfield_size = bf;
            info.ty = ty;
            for idx in indices {
                let idx = idx.ok_or_else(|| bad("bad array index"))?;
                let a = match RawArray::ref_from_prefix(cur.tail) {
                    Ok((a, _)) if cur.kind() == ARRAY => a,
                    _ => return Err(bad("it indexes a member that is not an array")),
                };
                let elem = TypeId(a.elem.get());
                let elem_bits = self.size_of(elem)?.saturating_mul(8);
                let add = elem_bits
                    .checked_mul(idx)
                    .ok_or_else(|| bad("the offset overflows"))?;
                info.bit_offset = info
                    .bit_offset
                    .checked_add(add)
                    .ok_or_else(|| bad("the offset overflows"))?;
                info.ty = elem;
                info.bitfield_size = 0;
                cur = self
                    .resolve_rec(elem.0)
                    .ok_or_else(|| self.resolve_error(elem))?;
            }
        }
        Ok(info)
    }

    /// [`Btf::resolve`] on raw records: `None` on a bad id or a chain too long.
    #[inline]
    fn resolve_rec(&self, id: u32) -> Option<Rec<'a>> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let r = self.rec(cur)?;
            match r.kind() {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => cur = r.st,
                _ => return Some(r),
            }
        }
        None
    }

    /// The error [`Btf::resolve`] gives for `id`.
    fn resolve_error(&self, id: TypeId) -> BtfError {
        match self.resolve(id) {
            Err(e) => e,
            Ok(_) => BtfError::TooDeep { id: id.0 },
        }
    }

    /// Search `t`'s members for `name`, descending into anonymous struct/union members.
    /// Returns (bit offset, bitfield size, type, kind_flag of the struct holding it).
    fn find_member(
        &self,
        t: Rec<'a>,
        name: &[u8],
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<(u64, u32, TypeId, bool)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id: t.id });
        }
        let kf = t.kind_flag();
        let members = <[RawMember]>::ref_from_bytes(t.tail).unwrap_or(&[]);
        let strings = self.strings();
        for m in members {
            *budget = budget
                .checked_sub(1)
                .ok_or(BtfError::TooDeep { id: t.id })?;
            let name_off = m.name_off.get();
            if name_off == 0 {
                let ty = TypeId(m.ty.get());
                let inner = self
                    .resolve_rec(ty.0)
                    .ok_or_else(|| self.resolve_error(ty))?;
                if matches!(inner.kind(), STRUCT | UNION)
                    && let Some((off, bf, ty, inner_kf)) =
                        self.find_member(inner, name, depth + 1, budget)?
                {
                    let (base, _) = member_offset(kf, m.offset.get());
                    return Ok(Some((off + u64::from(base), bf, ty, inner_kf)));
                }
            } else if strings.eq(name_off, name) {
                let (off, bf) = member_offset(kf, m.offset.get());
                return Ok(Some((u64::from(off), bf, TypeId(m.ty.get()), kf)));
            }
        }
        Ok(None)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::builder::BtfBuilder;
    use crate::testdata::tiny;
    use proptest::prelude::*;

    #[test]
    fn paths_through_anonymous_members_arrays_and_typedefs() {
        let data = tiny();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member("rq", "clock_alt").unwrap().byte_offset(), 40);
        assert_eq!(btf.member("rq", "scx.flags").unwrap().byte_offset(), 8 + 24);
        assert_eq!(
            btf.member("task_struct", "comm[3]").unwrap().byte_offset(),
            16 + 3
        );
        assert_eq!(
            btf.member("task_struct", "scx.dsq_vtime")
                .unwrap()
                .byte_offset(),
            40
        );
        let e = btf.member("task_struct", "scx.dsq.nr").unwrap_err();
        assert!(matches!(e, BtfError::BadPath { .. }), "{e}");
        assert!(matches!(
            btf.member("rq", "nope"),
            Err(BtfError::NoSuchMember { .. })
        ));
        assert!(matches!(
            btf.member("nope", "x"),
            Err(BtfError::NoSuchType { .. })
        ));
        assert!(matches!(
            btf.member("rq", "nr_running[1]"),
            Err(BtfError::BadPath { .. })
        ));
        assert!(matches!(
            btf.member("rq", "scx..x"),
            Err(BtfError::BadPath { .. })
        ));
    }

    #[test]
    fn legacy_int_bitfields() {
        let mut b = BtfBuilder::new();
        let bits3 = b.int_encoded("unsigned int", 4, 0, 2, 3);
        b.struct_type("s", 4, &[("f", bits3, 8, 0)]);
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        let m = btf.member("s", "f").unwrap();
        assert_eq!((m.bit_offset, m.bitfield_size), (10, 3));
    }

    #[test]
    fn cycles_end_in_errors_not_hangs() {
        let mut b = BtfBuilder::new();
        b.typedef("a", TypeId(2));
        b.typedef("b", TypeId(1));
        let s = b.next_id();
        b.struct_type("s", 8, &[("", s, 0, 0)]);
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        assert!(matches!(
            btf.size_of(TypeId(1)),
            Err(BtfError::TooDeep { .. })
        ));
        assert!(matches!(
            btf.align_of(TypeId(1)),
            Err(BtfError::TooDeep { .. })
        ));
        assert!(matches!(
            btf.member("s", "x"),
            Err(BtfError::TooDeep { .. })
        ));
        assert!(btf.align_of(s).is_err());
    }

    #[test]
    fn packed_and_aligned() {
        let mut b = BtfBuilder::new();
        let ch = b.int("char", 1, true);
        let long = b.int("long", 8, true);
        let p = b.struct_type("p", 9, &[("c", ch, 0, 0), ("l", long, 8, 0)]);
        let n = b.struct_type("n", 16, &[("c", ch, 0, 0), ("l", long, 64, 0)]);
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        assert!(btf.is_packed(p).unwrap());
        assert_eq!(btf.align_of(p).unwrap(), 1);
        assert!(!btf.is_packed(n).unwrap());
        assert_eq!(btf.align_of(n).unwrap(), 8);
    }

    proptest! {
        /// Offsets written by the builder come back from `member`, in structs nested one level
        /// through a named member and an anonymous one.
        #[test]
        fn member_offsets_round_trip(
            offsets in proptest::collection::vec(0u32..1 << 20, 1..20),
            outer_off in 0u32..1 << 20,
            bitfield in 0u32..32,
        ) {
            let mut b = BtfBuilder::new();
            let int = b.int("int", 4, true);
            let names: Vec<String> = (0..offsets.len()).map(|i| alloc::format!("m{i}")).collect();
            let members: Vec<(&str, TypeId, u32, u32)> = names
                .iter()
                .zip(&offsets)
                .map(|(n, &o)| (n.as_str(), int, o, bitfield))
                .collect();
            let inner = b.struct_type("inner", 1 << 20, &members);
            let anon = b.union_type("", 1 << 20, &[("", inner, 0, 0)]);
            b.struct_type("outer", 1 << 21, &[("in", inner, outer_off, 0), ("", anon, 64, 0)]);
            let data = b.finish();
            let btf = Btf::parse(&data).unwrap();
            for (n, &o) in names.iter().zip(&offsets) {
                let m = btf.member("outer", &alloc::format!("in.{n}")).unwrap();
                prop_assert_eq!(m.bit_offset, u64::from(outer_off) + u64::from(o));
                prop_assert_eq!(m.bitfield_size, bitfield);
                let m = btf.member("outer", n).unwrap();
                prop_assert_eq!(m.bit_offset, 64 + u64::from(o));
            }
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Btf::parse(&data);
        }
    }
}
