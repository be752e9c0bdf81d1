//! What a probe captures of a `struct task_struct *` or `struct rq *`
//! argument: the fields, where BTF says they live, how the kernel's probe
//! fetch syntax reads them, and how a captured value is decoded back with
//! BTF's typed-value decoding.

use ktstr_btf::{Btf, BtfError, CpuList, Decoded, Kind, TypeId};

use crate::ProbeError;

/// The kind of an argument the probes decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArgKind {
    /// `struct task_struct *`.
    Task,
    /// `struct rq *`.
    Rq,
}

impl ArgKind {
    /// The C struct behind the pointer.
    pub fn struct_name(self) -> &'static str {
        match self {
            ArgKind::Task => "task_struct",
            ArgKind::Rq => "rq",
        }
    }

    /// The kind of a parameter of type `ty` (a pointer to one of the structs).
    pub fn of_param(btf: &Btf<'_>, ty: TypeId) -> Option<ArgKind> {
        let t = btf.resolve(ty).ok()?;
        if t.kind() != Kind::Ptr {
            return None;
        }
        let target = btf.resolve(t.referenced()?).ok()?;
        match (target.kind(), target.name()) {
            (Kind::Struct, "task_struct") => Some(ArgKind::Task),
            (Kind::Struct, "rq") => Some(ArgKind::Rq),
            _ => None,
        }
    }

    /// The fields captured for this kind.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            ArgKind::Task => TASK_FIELDS,
            ArgKind::Rq => RQ_FIELDS,
        }
    }
}

/// How a captured field is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// With the member's own BTF type (ints, strings).
    Member,
    /// The value is a pointer to a `struct cpumask`; the probe reads its first word.
    CpumaskPtr,
    /// The value (of the member's size) is decoded with this enum's type: names or flags.
    Enum(&'static str),
    /// The value is a pointer to a struct; the probe reads this member of it
    /// (a NULL pointer reads as a fault, shown as `-`).
    Deref(&'static str, &'static str, &'static str),
}

/// One captured field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Label in the output.
    pub label: &'static str,
    /// Dotted member path in the struct.
    pub path: &'static str,
    /// How it is decoded.
    pub decode: Decode,
}

const fn f(label: &'static str, path: &'static str, decode: Decode) -> FieldSpec {
    FieldSpec {
        label,
        path,
        decode,
    }
}

/// `struct task_struct` fields.
pub const TASK_FIELDS: &[FieldSpec] = &[
    f("pid", "pid", Decode::Member),
    f("comm", "comm", Decode::Member),
    f("cpus_ptr", "cpus_ptr", Decode::CpumaskPtr),
    f(
        "dsq_id",
        "scx.dsq",
        Decode::Deref("scx_dispatch_q", "id", "scx_dsq_id_flags"),
    ),
    f(
        "ddsp_dsq_id",
        "scx.ddsp_dsq_id",
        Decode::Enum("scx_dsq_id_flags"),
    ),
    f("scx_flags", "scx.flags", Decode::Enum("scx_ent_flags")),
    f("slice", "scx.slice", Decode::Member),
];

/// `struct rq` fields.
pub const RQ_FIELDS: &[FieldSpec] = &[
    f("cpu", "cpu", Decode::Member),
    f("nr_running", "nr_running", Decode::Member),
    f("scx_nr_running", "scx.nr_running", Decode::Member),
];

/// The probe fetch type for a value of `size` bytes (hex: decoded on the host).
fn fetch_type(size: u64) -> Option<&'static str> {
    match size {
        1 => Some("x8"),
        2 => Some("x16"),
        4 => Some("x32"),
        8 => Some("x64"),
        _ => None,
    }
}

/// The fetch argument that reads `spec` of the struct at `base` (`$arg2`),
/// named `name`, for a kprobe/fprobe event definition.
pub fn fetch_arg(
    btf: &Btf<'_>,
    kind: ArgKind,
    spec: &FieldSpec,
    base: &str,
    name: &str,
) -> Result<String, ProbeError> {
    let s = kind.struct_name();
    let m = btf
        .member(s, spec.path)
        .map_err(|e| ProbeError::btf(format!("{s}.{}", spec.path), e))?;
    let off = m.byte_offset();
    let size = btf
        .size_of(m.ty)
        .map_err(|e| ProbeError::btf(spec.path, e))?;
    let text = match spec.decode {
        Decode::CpumaskPtr => format!("{name}=+0(+{off}({base})):x64"),
        Decode::Deref(outer, member, _) => {
            let inner = btf
                .member(outer, member)
                .map_err(|e| ProbeError::btf(format!("{outer}.{member}"), e))?;
            let isize = btf
                .size_of(inner.ty)
                .map_err(|e| ProbeError::btf(member, e))?;
            let ty = fetch_type(isize).ok_or_else(|| ProbeError::unsupported(member))?;
            // The pointer too: a NULL one reads as 0 through the probe, which
            // must not pass for DSQ 0.
            format!(
                "{name}=+{}(+{off}({base})):{ty} {name}p=+{off}({base}):x64",
                inner.byte_offset()
            )
        }
        Decode::Member if is_char_array(btf, m.ty) => format!("{name}=+{off}({base}):string"),
        Decode::Member | Decode::Enum(_) => {
            let ty = fetch_type(size).ok_or_else(|| ProbeError::unsupported(spec.path))?;
            format!("{name}=+{off}({base}):{ty}")
        }
    };
    Ok(text)
}

fn is_char_array(btf: &Btf<'_>, ty: TypeId) -> bool {
    let Ok(t) = btf.resolve(ty) else {
        return false;
    };
    let Some(a) = t.array() else {
        return false;
    };
    btf.resolve(a.elem)
        .ok()
        .and_then(|e| e.int())
        .is_some_and(|i| i.bits == 8)
}

/// A captured raw value, as the kernel's probe printed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RawValue {
    /// A number.
    Num(u64),
    /// A string.
    Str(String),
    /// The read faulted (a NULL or bad pointer).
    Fault,
}

/// A decoded field value, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown<'a> {
    /// BTF's typed decoding of the value.
    Value(Decoded<'a>),
    /// A CPU mask: its first word, with the CPU list BTF's decoder made of it.
    Mask(u64, CpuList),
    /// The pointer read faulted (NULL).
    None,
    /// The record could not be decoded: why.
    Error(DecodeError<'a>),
}

/// Why a captured field could not be decoded with the kernel's BTF.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError<'a> {
    /// The struct has no such member in this kernel's BTF.
    #[error("{strukt}.{path}: {source}")]
    Member {
        /// The struct.
        strukt: &'static str,
        /// The member's path.
        path: &'static str,
        /// The lookup's error.
        source: BtfError,
    },
    /// A BTF query on the member's type failed.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The record holds a string where a number belongs.
    #[error("expected a number, got the string {0:?}")]
    NotNumber(String),
    /// The type is wider than one captured number.
    #[error("a {size}-byte value cannot come from one number")]
    TooWide {
        /// The type's size.
        size: u64,
    },
    /// The number has bits beyond the type's size.
    #[error("{value:#x} does not fit in {size} bytes")]
    DoesNotFit {
        /// The number.
        value: u64,
        /// The type's size.
        size: usize,
    },
    /// The record holds a string for a member that is not a char array.
    #[error("{0} is not a string")]
    NotString(&'static str),
    /// The kernel's BTF has no `struct cpumask`.
    #[error("the kernel's BTF has no struct cpumask")]
    NoCpumask,
    /// `struct cpumask` decoded as something else than a mask.
    #[error("struct cpumask decoded as {0}")]
    NotCpumask(Decoded<'a>),
    /// The kernel's BTF has no enum of that name.
    #[error("the kernel's BTF has no enum {0}")]
    NoEnum(&'static str),
    /// The enum's size is not 1 to 8 bytes.
    #[error("enum of {0} bytes")]
    EnumSize(usize),
    /// The number has bits beyond the enum's size.
    #[error("{value:#x} does not fit the {size}-byte enum")]
    NotInEnum {
        /// The number.
        value: u64,
        /// The enum's size.
        size: usize,
    },
    /// The record lacks the field.
    #[error("{0} is not in the record")]
    NotInRecord(String),
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Value(Decoded::Flags { names, rest, .. }) => {
                let mut parts: Vec<String> = names.iter().map(|n| short_flag(n)).collect();
                if *rest != 0 {
                    parts.push(format!("{rest:#x}"));
                }
                if parts.is_empty() {
                    return f.write_str("0");
                }
                f.write_str(&parts.join("|"))
            }
            Shown::Value(Decoded::Enum { name: Some(n), .. }) if n.starts_with("SCX_TASK_") => {
                f.write_str(&short_flag(n))
            }
            Shown::Value(Decoded::Enum { name: None, value }) => write!(f, "{value:#x}"),
            Shown::Value(Decoded::Str(s)) => f.write_str(s),
            Shown::Value(v) => write!(f, "{v}"),
            Shown::Mask(w, l) => write!(f, "{w:#x}({l})"),
            Shown::None => f.write_str("-"),
            Shown::Error(e) => write!(f, "<error: {e}>"),
        }
    }
}

/// `SCX_TASK_QUEUED` -> `QUEUED`.
fn short_flag(n: &str) -> String {
    n.strip_prefix("SCX_TASK_").unwrap_or(n).to_string()
}

/// The name of the companion value that holds the pointer of a
/// [`Decode::Deref`] field fetched as `name`.
pub fn pointer_name(name: &str) -> String {
    format!("{name}p")
}

/// Decodes the captured `raw` of `spec` (a field of `kind`) with BTF.
/// Never panics: a value that does not fit its type is an [`Shown::Error`].
pub fn decode<'a>(btf: &Btf<'a>, kind: ArgKind, spec: &FieldSpec, raw: &RawValue) -> Shown<'a> {
    match decode_inner(btf, kind, spec, raw) {
        Ok(s) => s,
        Err(e) => Shown::Error(e),
    }
}

fn decode_inner<'a>(
    btf: &Btf<'a>,
    kind: ArgKind,
    spec: &FieldSpec,
    raw: &RawValue,
) -> Result<Shown<'a>, DecodeError<'a>> {
    let m = btf
        .member(kind.struct_name(), spec.path)
        .map_err(|source| DecodeError::Member {
            strukt: kind.struct_name(),
            path: spec.path,
            source,
        })?;
    let num = |r: &RawValue| match r {
        RawValue::Num(n) => Ok(Some(*n)),
        RawValue::Fault => Ok(None),
        RawValue::Str(s) => Err(DecodeError::NotNumber(s.clone())),
    };
    let sized = |ty: TypeId, v: u64| -> Result<Vec<u8>, DecodeError<'a>> {
        let size = btf.size_of(ty)?;
        if size > 8 {
            return Err(DecodeError::TooWide { size });
        }
        // At most 8: it fits.
        let size = size as usize;
        if size < 8 && v >> (size * 8) != 0 {
            return Err(DecodeError::DoesNotFit { value: v, size });
        }
        Ok(v.to_le_bytes()[..size].to_vec())
    };
    match spec.decode {
        Decode::Member => match raw {
            RawValue::Str(s) => {
                if !is_char_array(btf, m.ty) {
                    return Err(DecodeError::NotString(spec.path));
                }
                let size = btf.size_of(m.ty)?;
                let mut bytes = s.as_bytes().to_vec();
                bytes.truncate(usize::try_from(size).unwrap_or(0).saturating_sub(1));
                bytes.resize(usize::try_from(size).unwrap_or(0), 0);
                Ok(Shown::Value(btf.decode(m.ty, &bytes)?))
            }
            r => match num(r)? {
                None => Ok(Shown::None),
                Some(v) => Ok(Shown::Value(btf.decode(m.ty, &sized(m.ty, v)?)?)),
            },
        },
        Decode::Enum(e) | Decode::Deref(_, _, e) => {
            let Some(v) = num(raw)? else {
                return Ok(Shown::None);
            };
            let id = find_enum(btf, e)?;
            let d = btf.decode(id, &widen(btf, id, v)?)?;
            Ok(Shown::Value(name_better(btf, id, d)))
        }
        Decode::CpumaskPtr => {
            let Some(v) = num(raw)? else {
                return Ok(Shown::None);
            };
            let id = btf
                .find_kind("cpumask", Kind::Struct)
                .ok_or(DecodeError::NoCpumask)?;
            let size = btf.size_of(id)?;
            let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0).max(8)];
            bytes[..8].copy_from_slice(&v.to_le_bytes());
            match btf.decode(id, &bytes)? {
                Decoded::Cpumask(l) => Ok(Shown::Mask(v, l)),
                other => Err(DecodeError::NotCpumask(other)),
            }
        }
    }
}

fn find_enum<'a>(btf: &Btf<'_>, name: &'static str) -> Result<TypeId, DecodeError<'a>> {
    btf.find_kind(name, Kind::Enum)
        .or_else(|| btf.find_kind(name, Kind::Enum64))
        .ok_or(DecodeError::NoEnum(name))
}

/// `v` as bytes of the enum `id`'s size (a value wider than the enum is cut
/// to its low bytes only when the rest is zero).
fn widen<'a>(btf: &Btf<'_>, id: TypeId, v: u64) -> Result<Vec<u8>, DecodeError<'a>> {
    let size = usize::try_from(btf.size_of(id)?).unwrap_or(0);
    if size == 0 || size > 8 {
        return Err(DecodeError::EnumSize(size));
    }
    if size < 8 && v >> (size * 8) != 0 {
        return Err(DecodeError::NotInEnum { value: v, size });
    }
    Ok(v.to_le_bytes()[..size].to_vec())
}

/// An enum value named as a reader wants it: a value several enumerators
/// share goes by the one that is not a `_FLAG_` (`SCX_DSQ_INVALID`, not
/// `SCX_DSQ_FLAG_BUILTIN`); a value no enumerator equals, of an enum that
/// mixes bits and masks (`scx_ent_flags`), by its single-bit enumerators.
fn name_better<'a>(btf: &Btf<'a>, id: TypeId, d: Decoded<'a>) -> Decoded<'a> {
    let Ok(t) = btf.resolve(id) else {
        return d;
    };
    match d {
        Decoded::Enum {
            value,
            name: Some(n),
        } if n.contains("_FLAG_") => {
            let better = t
                .enumerators()
                .find(|e| e.value.raw == value && !e.name.contains("_FLAG_"))
                .map(|e| e.name);
            Decoded::Enum {
                value,
                name: better.or(Some(n)),
            }
        }
        Decoded::Enum { value, name: None } => {
            let mut names = Vec::new();
            let mut rest = value;
            for e in t.enumerators() {
                let bit = e.value.raw;
                if bit.count_ones() == 1 && value & bit != 0 && rest & bit != 0 {
                    names.push(e.name);
                    rest &= !bit;
                }
            }
            if names.is_empty() {
                Decoded::Enum { value, name: None }
            } else {
                Decoded::Flags { value, names, rest }
            }
        }
        other => other,
    }
}
