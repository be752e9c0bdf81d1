//! Parsing and validation: from bytes to a [`Btf`] whose every record is known to be sound.
//!
//! The checks follow the order of libbpf's `btf_parse_hdr`/`btf_parse_str_sec`/
//! `btf_parse_type_sec`: header, section bounds (by subtraction, so nothing overflows), string
//! section, then each type record's length, kind, string offsets and type ids. After `parse`
//! succeeds, queries may assume every record is whole and every id and name offset in range;
//! they still read through checked accessors and fall back to empty values, never panicking.

use alloc::vec::Vec;

use zerocopy::FromBytes;

use crate::error::BtfError;
use crate::index::NameIndex;
use crate::raw::{
    Header, MAGIC, MAGIC_SWAPPED, RawArray, RawEnum, RawEnum64, RawMember, RawParam, RawU32,
    RawVarSecinfo, TypeHeader, VERSION,
};
use crate::types::{Kind, Strings, Type, TypeId};

/// Size of the fixed part of `struct btf_header`.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_HEADER_LEN: usize = 12;

/// Parsed, validated BTF borrowing its bytes.
///
/// A base BTF (such as `/sys/kernel/btf/vmlinux`) numbers its types from 1; a split BTF (a
/// module's or a BPF program's) continues the numbering of its base and may use the base's
/// strings. The name index is built once, at parse time.
#[derive(Debug)]
pub struct Btf<'a> {
    types: &'a [u8],
    strings: Strings<'a>,
    /// Byte offset in `types` of each own type record, in id order.
    offsets: Vec<u32>,
    /// Id of the first own type: 1 for a base BTF, the base's type count for a split one.
    start_id: u32,
    base: Option<&'a Btf<'a>>,
    pub(crate) index: NameIndex,
}

impl<'a> Btf<'a> {
    /// Parse base BTF, such as the contents of `/sys/kernel/btf/vmlinux` or a vmlinux's `.BTF`.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// assert!(btf.find("task_struct").is_some());
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        Self::parse_inner(data, None)
    }

    /// Parse split BTF whose type ids and string offsets continue those of `base` (a kernel
    /// module's `.BTF`, or `/sys/kernel/btf/<module>`). `base` must itself be base BTF.
    ///
    /// ```
    /// # let (base_bytes, split_bytes) = ktstr_btf::testdata::tiny_split();
    /// let base = ktstr_btf::Btf::parse(&base_bytes)?;
    /// let module = ktstr_btf::Btf::parse_split(&split_bytes, &base)?;
    /// let id = module.find("mod_state").expect("defined in the split part");
    /// assert!(id.0 >= base.type_count());
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn parse_split(data: &'a [u8], base: &'a Btf<'a>) -> Result<Btf<'a>, BtfError> {
        if base.base.is_some() {
            return Err(BtfError::Layout(
                "the base of a split BTF must not be split itself",
            ));
        }
        Self::parse_inner(data, Some(base))
    }

    fn parse_inner(data: &'a [u8], base: Option<&'a Btf<'a>>) -> Result<Btf<'a>, BtfError> {
        let (hdr, _) =
            Header::ref_from_prefix(data).map_err(|_| BtfError::TooShort { len: data.len() })?;
        let magic = hdr.magic.get();
        if magic == MAGIC_SWAPPED {
            return Err(BtfError::BigEndian);
        }
        if magic != MAGIC {
            return Err(BtfError::BadMagic { magic });
        }
        if hdr.version != VERSION {
            return Err(BtfError::Version(hdr.version));
        }
        if hdr.flags != 0 {
            return Err(BtfError::Flags(hdr.flags));
        }
        let hdr_len = hdr.hdr_len.get();
        // A longer header (a newer kernel's) is honoured: sections are relative to its end.
        if (hdr_len as usize) < HEADER_LEN || hdr_len as usize > data.len() {
            return Err(BtfError::HeaderLen {
                hdr_len,
                len: data.len(),
            });
        }
        let body = data.get(hdr_len as usize..).unwrap_or(&[]);
        let types = section(body, "type", hdr.type_off.get(), hdr.type_len.get())?;
        let own_strings = section(body, "string", hdr.str_off.get(), hdr.str_len.get())?;
        if hdr.type_off.get() % 4 != 0 {
            return Err(BtfError::Layout("the type section is not 4-byte aligned"));
        }
        // Types come before strings and the two do not overlap (libbpf's rule).
        if u64::from(hdr.type_off.get()) + u64::from(hdr.type_len.get())
            > u64::from(hdr.str_off.get())
        {
            return Err(BtfError::Layout(
                "the type section must end before the string section starts",
            ));
        }
        check_strings(own_strings, base.is_none())?;

        let strings = Strings {
            base: base.map_or(&[][..], |b| b.strings.own),
            own: own_strings,
        };
        let start_id = base.map_or(1, |b| b.type_count());
        let offsets = walk_types(types, strings, start_id)?;
        let index = NameIndex::build(types, &offsets, strings);
        Ok(Btf {
            types,
            strings,
            offsets,
            start_id,
            base,
            index,
        })
    }

    /// Number of type ids, counting `void` (id 0) and, for split BTF, the base's types. Valid
    /// ids are `0..type_count()`.
    pub fn type_count(&self) -> u32 {
        // `walk_types` checked that this cannot overflow.
        self.start_id + self.offsets.len() as u32
    }

    /// The first id that belongs to this BTF rather than to its base (1 for base BTF).
    pub fn first_own_id(&self) -> TypeId {
        TypeId(self.start_id)
    }

    /// The string at offset `off` of the string section (of the base, then
    /// this BTF); empty when out of range. For records that name strings by
    /// offset, such as `.BTF.ext` line info.
    pub fn string_at(&self, off: u32) -> &'a str {
        self.strings.get(off)
    }

    /// The base BTF of a split BTF.
    pub fn base(&self) -> Option<&'a Btf<'a>> {
        self.base
    }

    /// The type with id `id`.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// use ktstr_btf::{Btf, Kind, TypeId};
    /// let btf = Btf::parse(&bytes)?;
    /// assert_eq!(btf.ty(TypeId::VOID)?.kind(), Kind::Void);
    /// let id = btf.find("task_struct").expect("present");
    /// assert_eq!(btf.ty(id)?.name(), "task_struct");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    #[inline]
    pub fn ty(&self, id: TypeId) -> Result<Type<'a>, BtfError> {
        if id.0 == 0 {
            return Ok(Type::void(self.strings));
        }
        if id.0 < self.start_id {
            return match self.base {
                Some(b) => b.ty(id),
                None => Err(self.id_error(id)),
            };
        }
        let off = *self
            .offsets
            .get((id.0 - self.start_id) as usize)
            .ok_or_else(|| self.id_error(id))?;
        record_at(self.types, off as usize, id, self.strings).ok_or_else(|| self.id_error(id))
    }

    pub(crate) fn id_error(&self, id: TypeId) -> BtfError {
        BtfError::TypeIdRange {
            id: 0,
            target: id.0,
            last: self.type_count().saturating_sub(1),
        }
    }

    /// Every type of this BTF (not its base), in id order.
    pub fn types(&self) -> impl Iterator<Item = Type<'a>> + '_ {
        self.offsets
            .iter()
            .enumerate()
            .filter_map(move |(i, &off)| {
                record_at(
                    self.types,
                    off as usize,
                    TypeId(self.start_id + i as u32),
                    self.strings,
                )
            })
    }

    /// Every type including those of the base, in id order (without `void`).
    pub fn all_types(&self) -> impl Iterator<Item = Type<'a>> + '_ {
        self.base
            .into_iter()
            .flat_map(|b| b.types())
            .chain(self.types())
    }

    /// The first type (lowest id) named `name`, of any kind; the base is searched first.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let id = btf.find("rq").expect("struct rq is present");
    /// assert_eq!(btf.ty(id)?.name(), "rq");
    /// assert!(btf.find("no_such_type").is_none());
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn find(&self, name: &str) -> Option<TypeId> {
        self.find_all(name).next()
    }

    /// The first type named `name` of kind `kind`.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// use ktstr_btf::{Btf, Kind};
    /// let btf = Btf::parse(&bytes)?;
    /// assert!(btf.find_kind("u64", Kind::Typedef).is_some());
    /// assert!(btf.find_kind("u64", Kind::Struct).is_none());
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn find_kind(&self, name: &str, kind: Kind) -> Option<TypeId> {
        self.find_all(name)
            .find(|&id| self.ty(id).is_ok_and(|t| t.kind() == kind))
    }

    /// Every type named `name`, base first, in id order.
    pub fn find_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = TypeId> + 's {
        let base = self
            .base
            .into_iter()
            .flat_map(move |b| b.index.lookup(b.strings, b.start_id, name));
        base.chain(self.index.lookup(self.strings, self.start_id, name))
    }

    pub(crate) fn strings(&self) -> Strings<'a> {
        self.strings
    }
}

/// A section of `body` (the bytes after the header), bounds-checked by subtraction.
fn section<'a>(
    body: &'a [u8],
    name: &'static str,
    off: u32,
    len: u32,
) -> Result<&'a [u8], BtfError> {
    let err = BtfError::SectionBounds {
        section: name,
        off,
        len,
        avail: body.len(),
    };
    let off_us = off as usize;
    if off_us > body.len() || len as usize > body.len() - off_us {
        return Err(err);
    }
    body.get(off_us..off_us + len as usize).ok_or(err)
}

fn check_strings(s: &[u8], is_base: bool) -> Result<(), BtfError> {
    if is_base && s.first() != Some(&0) {
        return Err(BtfError::Strings(
            "base BTF strings must start with an empty string",
        ));
    }
    if let Some(&last) = s.last()
        && last != 0
    {
        return Err(BtfError::Strings("the last string is not NUL-terminated"));
    }
    if core::str::from_utf8(s).is_err() {
        return Err(BtfError::Strings("not UTF-8"));
    }
    Ok(())
}

/// Length of the kind-specific data after the 12-byte header.
fn tail_len(kind: Kind, vlen: usize) -> usize {
    match kind {
        Kind::Int | Kind::Var | Kind::DeclTag => 4,
        Kind::Array => 12,
        Kind::Struct | Kind::Union | Kind::Enum64 | Kind::Datasec => vlen * 12,
        Kind::Enum | Kind::FuncProto => vlen * 8,
        _ => 0,
    }
}

/// A type record's raw fields, lighter than [`Type`] for the hot query paths.
#[derive(Clone, Copy)]
pub(crate) struct Rec<'a> {
    pub id: u32,
    pub info: u32,
    pub st: u32,
    pub tail: &'a [u8],
}

impl Rec<'_> {
    #[inline]
    pub fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    #[inline]
    pub fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

impl<'a> Btf<'a> {
    /// The raw record of `id` (kind 0 for void); `None` if out of range.
    #[inline]
    pub(crate) fn rec(&self, id: u32) -> Option<Rec<'a>> {
        if id == 0 {
            return Some(Rec {
                id,
                info: 0,
                st: 0,
                tail: &[],
            });
        }
        if id < self.start_id {
            return self.base?.rec(id);
        }
        let off = *self.offsets.get((id - self.start_id) as usize)? as usize;
        let (h, rest) = TypeHeader::ref_from_prefix(self.types.get(off..)?).ok()?;
        let info = h.info.get();
        let kind = Kind::from_raw(((info >> 24) & 0x1f) as u8)?;
        Some(Rec {
            id,
            info,
            st: h.size_or_type.get(),
            tail: rest.get(..tail_len(kind, (info & 0xffff) as usize))?,
        })
    }
}

/// Decode the record at `off`; `None` if it is not whole (never after validation).
#[inline]
fn record_at<'a>(
    types: &'a [u8],
    off: usize,
    id: TypeId,
    strings: Strings<'a>,
) -> Option<Type<'a>> {
    let rest = types.get(off..)?;
    let (h, rest) = TypeHeader::ref_from_prefix(rest).ok()?;
    let info = h.info.get();
    let kind = Kind::from_raw(((info >> 24) & 0x1f) as u8)?;
    let tail = rest.get(..tail_len(kind, (info & 0xffff) as usize))?;
    Some(Type {
        id,
        kind,
        name_off: h.name_off.get(),
        info,
        size_or_type: h.size_or_type.get(),
        tail,
        strings,
    })
}

/// Tracks the largest type id any record refers to, and the first record referring to it.
struct MaxRef {
    target: u32,
    from: u32,
}

impl MaxRef {
    #[inline]
    fn see(&mut self, from: u32, target: u32) {
        if target > self.target {
            self.target = target;
            self.from = from;
        }
    }
}

/// Walk the type section once: lengths, kinds, name offsets, kind rules; then check that every
/// referenced id exists. Returns the offset of each record.
fn walk_types(types: &[u8], strings: Strings<'_>, start_id: u32) -> Result<Vec<u32>, BtfError> {
    // Each record is at least 12 bytes: this bounds the allocation by the input size.
    let mut offsets = Vec::with_capacity(types.len() / TYPE_HEADER_LEN);
    let mut refs = MaxRef { target: 0, from: 0 };
    let mut off = 0usize;
    let mut id = start_id;
    while off < types.len() {
        let rest = types.get(off..).unwrap_or(&[]);
        let Ok((h, tail_all)) = TypeHeader::ref_from_prefix(rest) else {
            return Err(BtfError::Invalid {
                id,
                kind: Kind::Void,
                what: "the type section ends inside a type header",
            });
        };
        let info = h.info.get();
        let raw_kind = ((info >> 24) & 0x1f) as u8;
        let kind = Kind::from_raw(raw_kind).ok_or(BtfError::UnknownKind { id, kind: raw_kind })?;
        let vlen = (info & 0xffff) as usize;
        let need = tail_len(kind, vlen);
        let tail = tail_all.get(..need).ok_or(BtfError::Truncated {
            id,
            kind,
            need: need + TYPE_HEADER_LEN,
            have: rest.len(),
        })?;
        let name_off = h.name_off.get();
        let name_err = |off: u32| BtfError::NameOffset { id, off };
        if !strings.contains(name_off) {
            return Err(name_err(name_off));
        }
        let st = h.size_or_type.get();
        let invalid = |what: &'static str| BtfError::Invalid { id, kind, what };
        match kind {
            Kind::Int => {
                let (enc, _) = RawU32::ref_from_prefix(tail).map_err(|_| invalid("short"))?;
                let enc = enc.val.get();
                let bits = enc & 0xff;
                let bit_off = (enc >> 16) & 0xff;
                if bits > 128 || u64::from(bits + bit_off) > u64::from(st) * 8 {
                    return Err(invalid("its bits do not fit its size"));
                }
            }
            k if k.has_type_ref() => refs.see(id, st),
            Kind::Array => {
                let (a, _) = RawArray::ref_from_prefix(tail).map_err(|_| invalid("short"))?;
                refs.see(id, a.elem.get());
                refs.see(id, a.index.get());
            }
            Kind::Struct | Kind::Union => {
                let ms = <[RawMember]>::ref_from_bytes(tail).map_err(|_| invalid("short"))?;
                for m in ms {
                    if !strings.contains(m.name_off.get()) {
                        return Err(name_err(m.name_off.get()));
                    }
                    refs.see(id, m.ty.get());
                }
            }
            Kind::Enum => {
                let es = <[RawEnum]>::ref_from_bytes(tail).map_err(|_| invalid("short"))?;
                if let Some(e) = es.iter().find(|e| !strings.contains(e.name_off.get())) {
                    return Err(name_err(e.name_off.get()));
                }
            }
            Kind::Enum64 => {
                let es = <[RawEnum64]>::ref_from_bytes(tail).map_err(|_| invalid("short"))?;
                if let Some(e) = es.iter().find(|e| !strings.contains(e.name_off.get())) {
                    return Err(name_err(e.name_off.get()));
                }
            }
            Kind::Datasec => {
                let vs = <[RawVarSecinfo]>::ref_from_bytes(tail).map_err(|_| invalid("short"))?;
                for v in vs {
                    refs.see(id, v.ty.get());
                }
            }
            _ => {}
        }
        if kind == Kind::FuncProto {
            let ps = <[RawParam]>::ref_from_bytes(tail).map_err(|_| invalid("short"))?;
            for p in ps {
                if !strings.contains(p.name_off.get()) {
                    return Err(name_err(p.name_off.get()));
                }
                refs.see(id, p.ty.get());
            }
        }
        offsets.push(off as u32);
        off += TYPE_HEADER_LEN + need;
        id = id.checked_add(1).ok_or(BtfError::TooManyTypes)?;
    }
    // `id` is now the type count: every reference must be below it.
    if refs.target >= id {
        return Err(BtfError::TypeIdRange {
            id: refs.from,
            target: refs.target,
            last: id - 1,
        });
    }
    Ok(offsets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::builder::BtfBuilder;
    use crate::testdata::tiny;

    fn set_u32(data: &mut [u8], at: usize, v: u32) {
        data[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn header_checks_name_what_failed() {
        let good = tiny();
        assert!(Btf::parse(&good).is_ok());
        assert_eq!(
            Btf::parse(&good[..10]).unwrap_err(),
            BtfError::TooShort { len: 10 }
        );

        let mut be = good.clone();
        be.swap(0, 1);
        let e = Btf::parse(&be).unwrap_err();
        assert_eq!(e, BtfError::BigEndian);
        assert_eq!(alloc::format!("{e}"), "big-endian BTF is not supported");

        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadMagic { .. })));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(Btf::parse(&bad).unwrap_err(), BtfError::Version(2));
        let mut bad = good.clone();
        bad[3] = 1;
        assert_eq!(Btf::parse(&bad).unwrap_err(), BtfError::Flags(1));
        let mut bad = good.clone();
        set_u32(&mut bad, 4, 8);
        assert!(matches!(
            Btf::parse(&bad),
            Err(BtfError::HeaderLen { hdr_len: 8, .. })
        ));
        let mut bad = good.clone();
        set_u32(&mut bad, 4, u32::MAX);
        assert!(matches!(Btf::parse(&bad), Err(BtfError::HeaderLen { .. })));
    }

    #[test]
    fn section_bounds_do_not_overflow() {
        let good = tiny();
        for (field, v) in [
            (8, u32::MAX),
            (12, u32::MAX),
            (16, u32::MAX - 3),
            (20, u32::MAX),
        ] {
            let mut bad = good.clone();
            set_u32(&mut bad, field, v);
            assert!(Btf::parse(&bad).is_err(), "field at {field} = {v:#x}");
        }
        let mut bad = good.clone();
        set_u32(&mut bad, 8, 2);
        assert!(matches!(
            Btf::parse(&bad),
            Err(BtfError::Layout(_)) | Err(BtfError::SectionBounds { .. })
        ));
    }

    #[test]
    fn longer_header_is_honoured() {
        // A newer kernel's header with 8 more bytes: sections stay relative to its end.
        let good = tiny();
        let mut longer = good[..24].to_vec();
        set_u32(&mut longer, 4, 32);
        longer.extend_from_slice(&[0xaa; 8]);
        longer.extend_from_slice(&good[24..]);
        let btf = Btf::parse(&longer).unwrap();
        assert!(btf.find("rq").is_some());
    }

    #[test]
    fn strings_must_be_terminated_and_start_empty() {
        let mut good = tiny();
        let last = good.len() - 1;
        good[last] = b'x';
        assert_eq!(
            Btf::parse(&good).unwrap_err(),
            BtfError::Strings("the last string is not NUL-terminated")
        );
    }

    #[test]
    fn unknown_kind_is_a_clear_error() {
        let mut b = BtfBuilder::new();
        b.int("int", 4, true);
        b.raw_header("future", 20, false, 0, 0);
        let e = Btf::parse(&b.finish()).unwrap_err();
        assert_eq!(e, BtfError::UnknownKind { id: 2, kind: 20 });
        assert!(alloc::format!("{e}").contains("unknown kind 20"));
    }

    #[test]
    fn type_ids_and_name_offsets_are_checked() {
        let mut b = BtfBuilder::new();
        b.typedef("dangling", TypeId(7));
        assert_eq!(
            Btf::parse(&b.finish()).unwrap_err(),
            BtfError::TypeIdRange {
                id: 1,
                target: 7,
                last: 1
            }
        );
        let mut b = BtfBuilder::new();
        b.raw_header("", 1, false, 0, 4);
        b.raw_u32(32);
        let mut data = b.finish();
        set_u32(&mut data, 24, 999);
        assert_eq!(
            Btf::parse(&data).unwrap_err(),
            BtfError::NameOffset { id: 1, off: 999 }
        );
    }

    #[test]
    fn truncated_records_are_rejected() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4, true);
        b.struct_type("s", 4, &[("a", int, 0, 0)]);
        let data = b.finish();
        let types_len = data.len() - 24 - 9; // strings: "\0int\0s\0a\0"
        let mut cut: Vec<u8> = data[..24].to_vec();
        let keep = types_len - 4;
        cut.extend_from_slice(&data[24..24 + keep]);
        cut.extend_from_slice(&data[24 + types_len..]);
        set_u32(&mut cut, 12, keep as u32);
        set_u32(&mut cut, 16, keep as u32);
        assert!(matches!(
            Btf::parse(&cut),
            Err(BtfError::Truncated { id: 2, .. })
        ));
    }

    #[test]
    fn split_btf_continues_ids_and_strings() {
        let (base_bytes, split_bytes) = crate::testdata::tiny_split();
        let base = Btf::parse(&base_bytes).unwrap();
        let split = Btf::parse_split(&split_bytes, &base).unwrap();
        assert_eq!(split.first_own_id().0, base.type_count());
        let st = split.find("mod_state").unwrap();
        assert_eq!(split.member_of(st, "count").unwrap().byte_offset(), 8);
        // Base types are reachable, by id and by name, through the split view.
        let rq = split.find("rq").unwrap();
        assert_eq!(split.ty(rq).unwrap().name(), "rq");
        assert_eq!(
            split
                .member("rq", "scx.local_dsq.nr")
                .unwrap()
                .byte_offset(),
            24
        );
        assert!(Btf::parse_split(&split_bytes, &split).is_err());
        assert!(base.find("mod_state").is_none());
    }
}
