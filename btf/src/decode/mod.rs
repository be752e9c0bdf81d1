//! Typed-value decoding: a type id and the bytes of a value become a tree that prints like a
//! C initializer — enumerator names, flag names (`A|B|0x40`), cpumasks as CPU lists (`0-3,6`),
//! `char` arrays as strings, pointers as hex, nested structs and arrays.
//!
//! The host-side monitor uses it for guest kernel structs and BPF map values; the probe decoder
//! and auto-repro for captured arguments. The bytes are untrusted: a value shorter than its type
//! gives [`Decoded::Unavailable`] for the missing parts, and every walk is bounded by
//! [`DecodeLimits`] (depth, total nodes), so no input panics, recurses without end or allocates
//! without bound.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use crate::btf::Btf;
use crate::error::BtfError;
use crate::layout::PTR_SIZE;
use crate::types::{Kind, Type, TypeId};

/// Bounds on one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting of structs, unions and arrays decoded; deeper values are [`Decoded::Elided`].
    pub max_depth: u32,
    /// Most nodes (scalars, members, elements) in one tree; the rest are left out and counted.
    pub max_nodes: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_depth: 16,
            max_nodes: 4096,
        }
    }
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decoded<'a> {
    /// A signed integer (up to 128 bits).
    Int(i128),
    /// An unsigned integer (up to 128 bits).
    Uint(u128),
    /// A `_Bool`.
    Bool(bool),
    /// A lone `char`.
    Char(u8),
    /// A float or double (other widths are [`Decoded::Bytes`]).
    Float(f64),
    /// An enum value: `name` when it equals an enumerator.
    Enum {
        /// The value's bits.
        value: u64,
        /// The enumerator with that value, if any.
        name: Option<&'a str>,
    },
    /// An enum whose enumerators are single bits, holding a value no one enumerator equals:
    /// the names of its set bits and what is left.
    Flags {
        /// The value's bits.
        value: u64,
        /// Names of the enumerators whose bit is set, lowest bit first.
        names: Vec<&'a str>,
        /// Bits no enumerator names.
        rest: u64,
    },
    /// A pointer (its address).
    Ptr(u64),
    /// A `char` array up to its first NUL.
    Str(String),
    /// A `struct cpumask`: the CPUs whose bit is set.
    Cpumask(CpuList),
    /// An array: the decoded elements and how many were left out by the node budget.
    Array {
        /// Decoded elements.
        elems: Vec<Decoded<'a>>,
        /// Elements not decoded.
        omitted: u64,
    },
    /// A struct or union: its members in order (anonymous members have an empty name).
    Struct {
        /// Members decoded.
        fields: Vec<Field<'a>>,
        /// Members not decoded.
        omitted: u64,
    },
    /// Raw bytes of a type without a better form (odd-sized floats, ...).
    Bytes(Vec<u8>),
    /// The bytes given end before this value.
    Unavailable,
    /// Left out: nested deeper than [`DecodeLimits::max_depth`].
    Elided,
    /// A type that has no value (void, function, forward declaration).
    Opaque,
}

/// A struct or union member and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    /// Member name, empty for an anonymous struct or union member.
    pub name: &'a str,
    /// Its value.
    pub value: Decoded<'a>,
}

/// The set bits of a bitmap, printed in the kernel's list form (`0-3,6`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuList {
    /// Inclusive ranges of set bits, ascending.
    pub ranges: Vec<(u32, u32)>,
}

impl CpuList {
    /// The set bits of `bits`, a little-endian bitmap (such as `struct cpumask`'s `bits`).
    ///
    /// ```
    /// let l = ktstr_btf::CpuList::from_bitmap(&[0b0100_1111, 0, 0x01]);
    /// assert_eq!(l.to_string(), "0-3,6,16");
    /// assert_eq!(l.count(), 6);
    /// ```
    pub fn from_bitmap(bits: &[u8]) -> CpuList {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for (i, &byte) in bits.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for b in 0..8u32 {
                if byte & (1 << b) == 0 {
                    continue;
                }
                let cpu = (i as u32).saturating_mul(8).saturating_add(b);
                match ranges.last_mut() {
                    Some(last) if last.1.checked_add(1) == Some(cpu) => last.1 = cpu,
                    _ => ranges.push((cpu, cpu)),
                }
            }
        }
        CpuList { ranges }
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|&(a, b)| u64::from(b - a) + 1).sum()
    }

    /// Whether bit `cpu` is set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= cpu && cpu <= b)
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl<'a> Btf<'a> {
    /// Decode the value of type `ty` held in `bytes`, within the default [`DecodeLimits`].
    ///
    /// ```
    /// # let data = ktstr_btf::testdata::tiny();
    /// use ktstr_btf::{Btf, Decoded};
    /// let btf = Btf::parse(&data)?;
    /// let task = btf.find("task_struct").expect("present");
    /// let mut bytes = vec![0u8; btf.size_of(task)? as usize];
    /// bytes[12..16].copy_from_slice(&120i32.to_le_bytes()); // prio
    /// bytes[16..22].copy_from_slice(b"init\0\0");            // comm
    /// let v = btf.decode(task, &bytes)?;
    /// let text = v.to_string();
    /// assert!(text.contains("prio=120"), "{text}");
    /// assert!(text.contains("comm=\"init\""), "{text}");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn decode(&self, ty: TypeId, bytes: &[u8]) -> Result<Decoded<'a>, BtfError> {
        self.decode_with(ty, bytes, DecodeLimits::default())
    }

    /// [`Btf::decode`] within `limits`.
    pub fn decode_with(
        &self,
        ty: TypeId,
        bytes: &[u8],
        limits: DecodeLimits,
    ) -> Result<Decoded<'a>, BtfError> {
        let mut d = Decoder {
            btf: self,
            limits,
            nodes: 0,
        };
        d.value(ty, bytes, 0)
    }

    /// The name of the enumerator of enum `ty` whose value is `value`.
    ///
    /// ```
    /// # let data = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&data)?;
    /// let kind = btf.find("scx_exit_kind").expect("present");
    /// assert_eq!(btf.enum_name(kind, 1026)?, Some("SCX_EXIT_ERROR_STALL"));
    /// assert_eq!(btf.enum_name(kind, 7)?, None);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn enum_name(&self, ty: TypeId, value: u64) -> Result<Option<&'a str>, BtfError> {
        let t = self.enum_type(ty)?;
        let mask = value_mask(t.size().unwrap_or(8));
        Ok(t.enumerators()
            .find(|e| e.value.raw & mask == value & mask)
            .map(|e| e.name))
    }

    /// `value` of the enum `ty` as flag names: an enumerator's name when one equals it, else
    /// — for an enum of single bits (a few multi-bit masks allowed) — the names of its set
    /// bits joined by `|`, with the unnamed bits in hex at the end; plain hex otherwise.
    ///
    /// ```
    /// # let data = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&data)?;
    /// let flags = btf.find("scx_enq_flags").expect("present");
    /// assert_eq!(btf.format_flags(flags, 0x1 | 0x10 | 0x40)?, "SCX_ENQ_WAKEUP|SCX_ENQ_HEAD|0x40");
    /// assert_eq!(btf.format_flags(flags, 0x10)?, "SCX_ENQ_HEAD");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn format_flags(&self, ty: TypeId, value: u64) -> Result<String, BtfError> {
        let t = self.enum_type(ty)?;
        let mut s = String::new();
        write!(s, "{}", enum_value(t, value))?;
        Ok(s)
    }

    fn enum_type(&self, ty: TypeId) -> Result<Type<'a>, BtfError> {
        let t = self.resolve(ty)?;
        if !matches!(t.kind(), Kind::Enum | Kind::Enum64) {
            return Err(BtfError::WrongKind {
                id: ty.0,
                expected: "an enum",
                found: t.kind(),
            });
        }
        Ok(t)
    }
}

/// Bits a value of `size` bytes holds.
fn value_mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// The enum value `value` of `t`, named as [`Btf::format_flags`] describes.
fn enum_value<'a>(t: Type<'a>, value: u64) -> Decoded<'a> {
    let mask = value_mask(t.size().unwrap_or(8));
    let value = value & mask;
    if let Some(e) = t.enumerators().find(|e| e.value.raw & mask == value) {
        return Decoded::Enum {
            value,
            name: Some(e.name),
        };
    }
    // A flags enum: mostly single bits, maybe a few masks (`__SCX_ENQ_INTERNAL_MASK`). A dense
    // plain enum (0, 1, 2, 3, ...) has as many multi-bit values as single bits.
    let mut bits = 0u64;
    let (mut single, mut multi) = (0u32, 0u32);
    for e in t.enumerators() {
        let v = e.value.raw & mask;
        if v.is_power_of_two() {
            bits |= v;
            single += 1;
        } else if v != 0 {
            multi += 1;
        }
    }
    if single < 2 || multi * 2 > single || value & bits == 0 {
        return Decoded::Enum { value, name: None };
    }
    let mut names: Vec<(u64, &'a str)> = t
        .enumerators()
        .map(|e| (e.value.raw & mask, e.name))
        .filter(|&(v, _)| v.is_power_of_two() && value & v != 0)
        .collect();
    names.sort_by_key(|&(v, _)| v);
    names.dedup_by_key(|&mut (v, _)| v);
    Decoded::Flags {
        value,
        names: names.into_iter().map(|(_, n)| n).collect(),
        rest: value & !bits,
    }
}

/// Deepest nesting decoded whatever [`DecodeLimits::max_depth`] says.
const HARD_MAX_DEPTH: u32 = 64;

struct Decoder<'b, 'a> {
    btf: &'b Btf<'a>,
    limits: DecodeLimits,
    nodes: u32,
}

impl<'a> Decoder<'_, 'a> {
    /// Count one node; false once the budget is spent.
    fn take_node(&mut self) -> bool {
        if self.nodes >= self.limits.max_nodes {
            return false;
        }
        self.nodes += 1;
        true
    }

    fn value(&mut self, ty: TypeId, bytes: &[u8], depth: u32) -> Result<Decoded<'a>, BtfError> {
        // A hard cap whatever the caller's limit: every level is a native stack frame.
        if depth > self.limits.max_depth.min(HARD_MAX_DEPTH) {
            return Ok(Decoded::Elided);
        }
        let t = self.btf.resolve(ty)?;
        match t.kind() {
            Kind::Int => Ok(self.int(t, bytes)),
            Kind::Enum | Kind::Enum64 => {
                let size = t.size().unwrap_or(0) as usize;
                Ok(match le_uint(bytes, size) {
                    Some(v) => enum_value(t, v as u64),
                    None => Decoded::Unavailable,
                })
            }
            Kind::Ptr => Ok(match le_uint(bytes, PTR_SIZE as usize) {
                Some(v) => Decoded::Ptr(v as u64),
                None => Decoded::Unavailable,
            }),
            Kind::Float => Ok(float(t.size().unwrap_or(0), bytes)),
            Kind::Array => self.array(t, bytes, depth),
            Kind::Struct | Kind::Union => self.composite(t, bytes, depth),
            Kind::Var => self.value(TypeId(t.size_or_type), bytes, depth + 1),
            Kind::Datasec => self.datasec(t, bytes, depth),
            _ => Ok(Decoded::Opaque),
        }
    }

    fn int(&self, t: Type<'a>, bytes: &[u8]) -> Decoded<'a> {
        let size = t.size().unwrap_or(0) as usize;
        let Some(info) = t.int() else {
            return Decoded::Opaque;
        };
        let Some(raw) = le_uint(bytes, size) else {
            return Decoded::Unavailable;
        };
        // A legacy bitfield INT keeps its bits at `offset` inside the storage.
        let bits = u32::from(info.bits).min(128);
        let raw = raw.checked_shr(u32::from(info.offset)).unwrap_or(0);
        let raw = if bits >= 128 {
            raw
        } else {
            raw & ((1u128 << bits) - 1)
        };
        if info.bool {
            Decoded::Bool(raw != 0)
        } else if info.char || (size == 1 && t.name() == "char") {
            Decoded::Char(raw as u8)
        } else if info.signed {
            Decoded::Int(sign_extend(raw, bits))
        } else {
            Decoded::Uint(raw)
        }
    }

    fn array(&mut self, t: Type<'a>, bytes: &[u8], depth: u32) -> Result<Decoded<'a>, BtfError> {
        let Some(a) = t.array() else {
            return Ok(Decoded::Opaque);
        };
        let elem_size = self.btf.size_of(a.elem)?;
        if self.is_char(a.elem) {
            let n = usize::try_from(a.nelems).unwrap_or(usize::MAX);
            let avail = bytes.get(..n.min(bytes.len())).unwrap_or(&[]);
            if avail.is_empty() && n > 0 {
                return Ok(Decoded::Unavailable);
            }
            let end = avail.iter().position(|&b| b == 0).unwrap_or(avail.len());
            return Ok(Decoded::Str(
                String::from_utf8_lossy(avail.get(..end).unwrap_or(&[])).into_owned(),
            ));
        }
        if depth >= self.limits.max_depth {
            return Ok(Decoded::Elided);
        }
        let mut elems = Vec::new();
        let total = u64::from(a.nelems);
        for i in 0..total {
            if !self.take_node() {
                return Ok(Decoded::Array {
                    elems,
                    omitted: total - i,
                });
            }
            let v = match sub(bytes, i.saturating_mul(elem_size), elem_size) {
                Some(b) => self.value(a.elem, b, depth + 1)?,
                None => Decoded::Unavailable,
            };
            elems.push(v);
        }
        Ok(Decoded::Array { elems, omitted: 0 })
    }

    /// Whether `elem` is a one-byte `char` (a `char` array is a string).
    fn is_char(&self, elem: TypeId) -> bool {
        self.btf.resolve(elem).is_ok_and(|e| {
            e.size() == Some(1)
                && e.int()
                    .is_some_and(|i| i.char || e.name() == "char" || e.name() == "signed char")
        })
    }

    fn composite(
        &mut self,
        t: Type<'a>,
        bytes: &[u8],
        depth: u32,
    ) -> Result<Decoded<'a>, BtfError> {
        if t.name() == "cpumask" && t.kind() == Kind::Struct {
            let size = t.size().unwrap_or(0) as usize;
            return Ok(match bytes.get(..size) {
                Some(b) => Decoded::Cpumask(CpuList::from_bitmap(b)),
                None => Decoded::Unavailable,
            });
        }
        if depth >= self.limits.max_depth {
            return Ok(Decoded::Elided);
        }
        let mut fields = Vec::new();
        let total = t.members().count() as u64;
        for (i, m) in t.members().enumerate() {
            if !self.take_node() {
                return Ok(Decoded::Struct {
                    fields,
                    omitted: total - i as u64,
                });
            }
            let (bit_off, bf) = self.btf.member_bits(t.kind_flag(), m);
            let value = if bf != 0 {
                self.bitfield(m.ty, bytes, bit_off, bf)?
            } else {
                // A member cut short still shows its leading parts.
                let size = self.btf.size_of(m.ty).unwrap_or(0);
                match clamped(bytes, bit_off / 8, size) {
                    Some(b) => self.value(m.ty, b, depth + 1)?,
                    None => Decoded::Unavailable,
                }
            };
            fields.push(Field {
                name: m.name,
                value,
            });
        }
        Ok(Decoded::Struct { fields, omitted: 0 })
    }

    fn bitfield(
        &self,
        ty: TypeId,
        bytes: &[u8],
        bit_off: u64,
        bits: u32,
    ) -> Result<Decoded<'a>, BtfError> {
        let Some(raw) = extract_bits(bytes, bit_off, bits) else {
            return Ok(Decoded::Unavailable);
        };
        let t = self.btf.resolve(ty)?;
        Ok(match t.kind() {
            Kind::Enum | Kind::Enum64 => enum_value(t, raw as u64),
            Kind::Int if t.int().is_some_and(|i| i.bool) => Decoded::Bool(raw != 0),
            Kind::Int if t.int().is_some_and(|i| i.signed) => {
                Decoded::Int(sign_extend(raw, bits.min(128)))
            }
            _ => Decoded::Uint(raw),
        })
    }

    fn datasec(&mut self, t: Type<'a>, bytes: &[u8], depth: u32) -> Result<Decoded<'a>, BtfError> {
        let mut fields = Vec::new();
        let total = t.sec_vars().count() as u64;
        for (i, v) in t.sec_vars().enumerate() {
            if !self.take_node() {
                return Ok(Decoded::Struct {
                    fields,
                    omitted: total - i as u64,
                });
            }
            let name = self.btf.ty(v.ty).map(|var| var.name()).unwrap_or("");
            let value = match sub(bytes, u64::from(v.offset), u64::from(v.size)) {
                Some(b) => self.value(v.ty, b, depth + 1)?,
                None => Decoded::Unavailable,
            };
            fields.push(Field { name, value });
        }
        Ok(Decoded::Struct { fields, omitted: 0 })
    }
}

/// `bytes[off..off + len]`, if it is all there.
fn sub(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(off..off.checked_add(len)?)
}

/// `bytes[off..off + len]` cut at the end of `bytes`; `None` if `off` is past the end.
fn clamped(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    if off >= bytes.len() {
        return None;
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| off.checked_add(l))
        .map_or(bytes.len(), |e| e.min(bytes.len()));
    bytes.get(off..end)
}

/// The first `size` bytes (at most 16) as a little-endian unsigned integer.
fn le_uint(bytes: &[u8], size: usize) -> Option<u128> {
    if size == 0 || size > 16 {
        return None;
    }
    let b = bytes.get(..size)?;
    let mut buf = [0u8; 16];
    buf.get_mut(..size)?.copy_from_slice(b);
    Some(u128::from_le_bytes(buf))
}

/// `bits` bits starting `bit_off` bits into `bytes` (little-endian bit order, as x86 and BPF
/// lay out bitfields).
fn extract_bits(bytes: &[u8], bit_off: u64, bits: u32) -> Option<u128> {
    if bits == 0 || bits > 128 {
        return None;
    }
    let first = usize::try_from(bit_off / 8).ok()?;
    let shift = (bit_off % 8) as u32;
    let nbytes = (shift + bits).div_ceil(8) as usize;
    let window = bytes.get(first..first.checked_add(nbytes)?)?;
    let mut acc: u128 = 0;
    // Up to 17 bytes: the low 16 through u128, a 17th only contributes its low bits.
    for (i, &b) in window.iter().enumerate().take(16) {
        acc |= u128::from(b) << (8 * i);
    }
    let mut v = acc >> shift;
    if let Some(&extra) = window.get(16) {
        v |= u128::from(extra) << (128 - shift);
    }
    if bits < 128 {
        v &= (1u128 << bits) - 1;
    }
    Some(v)
}

fn sign_extend(raw: u128, bits: u32) -> i128 {
    if bits == 0 || bits >= 128 {
        return raw as i128;
    }
    let shift = 128 - bits;
    ((raw << shift) as i128) >> shift
}

fn float(size: u32, bytes: &[u8]) -> Decoded<'static> {
    match size {
        4 => match bytes.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(b) => Decoded::Float(f64::from(f32::from_le_bytes(b))),
            None => Decoded::Unavailable,
        },
        8 => match bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => Decoded::Float(f64::from_le_bytes(b)),
            None => Decoded::Unavailable,
        },
        n => match bytes.get(..n as usize) {
            Some(b) => Decoded::Bytes(b.to_vec()),
            None => Decoded::Unavailable,
        },
    }
}

impl fmt::Display for Decoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::Int(v) => write!(f, "{v}"),
            Decoded::Uint(v) => write!(f, "{v}"),
            Decoded::Bool(v) => write!(f, "{v}"),
            Decoded::Char(c) => write!(f, "{:?}", char::from(*c)),
            Decoded::Float(v) => write!(f, "{v}"),
            Decoded::Enum { name: Some(n), .. } => f.write_str(n),
            Decoded::Enum { value, name: None } => write!(f, "{value:#x}"),
            Decoded::Flags { names, rest, .. } => {
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_char('|')?;
                    }
                    f.write_str(n)?;
                }
                if *rest != 0 {
                    write!(f, "|{rest:#x}")?;
                }
                Ok(())
            }
            Decoded::Ptr(p) => write!(f, "{p:#x}"),
            Decoded::Str(s) => write!(f, "{s:?}"),
            Decoded::Cpumask(l) => write!(f, "cpus({l})"),
            Decoded::Array { elems, omitted } => {
                f.write_char('[')?;
                for (i, e) in elems.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                if *omitted > 0 {
                    write!(f, ", ... {omitted} more")?;
                }
                f.write_char(']')
            }
            Decoded::Struct { fields, omitted } => {
                f.write_char('{')?;
                for (i, fl) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if fl.name.is_empty() {
                        write!(f, "{}", fl.value)?;
                    } else {
                        write!(f, "{}={}", fl.name, fl.value)?;
                    }
                }
                if *omitted > 0 {
                    write!(f, ", ... {omitted} more")?;
                }
                f.write_char('}')
            }
            Decoded::Bytes(b) => {
                f.write_str("0x")?;
                b.iter().rev().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Decoded::Unavailable => f.write_str("<unavailable>"),
            Decoded::Elided => f.write_str("{...}"),
            Decoded::Opaque => f.write_str("<opaque>"),
        }
    }
}

impl Decoded<'_> {
    /// The member `name` of a decoded struct (searching anonymous members too).
    pub fn field(&self, name: &str) -> Option<&Self> {
        let Decoded::Struct { fields, .. } = self else {
            return None;
        };
        fields.iter().find_map(|f| {
            if f.name == name {
                Some(&f.value)
            } else if f.name.is_empty() {
                f.value.field(name)
            } else {
                None
            }
        })
    }

    /// The value as an unsigned integer, for integers, enums, flags, pointers and bools.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Decoded::Uint(v) => u64::try_from(v).ok(),
            Decoded::Int(v) => u64::try_from(v).ok(),
            Decoded::Bool(b) => Some(u64::from(b)),
            Decoded::Char(c) => Some(u64::from(c)),
            Decoded::Enum { value, .. } | Decoded::Flags { value, .. } => Some(value),
            Decoded::Ptr(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
