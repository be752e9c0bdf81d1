//! A C header (`vmlinux.h`) from BTF, for building BPF programs with clang.
//!
//! What `bpftool btf dump file vmlinux format c` produces, written from scratch:
//! - every named struct and union is forward-declared first, so pointers never need ordering;
//! - then types are defined in id order, each after the types it holds by value (a depth-first
//!   walk; typedefs are declared before any use, even through a pointer);
//! - anonymous structs, unions and enums are written inline where they are used;
//! - layouts are reproduced exactly: where C's natural layout would put a member elsewhere than
//!   BTF says, unnamed bitfields (`long: 64;`) pad up to it, and a struct whose members are not
//!   naturally aligned gets `__attribute__((packed))`;
//! - a name shared by two different types gets `___2`, `___3`... on the later ones;
//! - the kernel's `__builtin_va_list` typedef becomes `__btf_builtin_va_list`: clang's builtin
//!   cannot be redefined, and for BPF it is 8 bytes where the x86-64 kernel's is 24;
//! - an anonymous member of a named struct type (`struct foo;` inside a struct, allowed by
//!   `-fms-extensions`, which Linux 7.x builds with) is written as such: compile the header
//!   with `-fms-extensions -Wno-microsoft-anon-tag`, or those members silently vanish.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::btf::Btf;
use crate::error::BtfError;
use crate::layout::{PTR_SIZE, scalar_align};
use crate::types::{Kind, Type, TypeId};

/// clang's own type: redefining it is an error, and BPF's is 8 bytes where x86-64's is 24.
const BUILTIN_VA_LIST: &str = "__builtin_va_list";
/// What the kernel's `__builtin_va_list` typedef is called in the header, keeping its layout.
const RENAMED_VA_LIST: &str = "__btf_builtin_va_list";

/// Deepest chain of definitions the dump follows before giving up (real kernels need ~30).
const MAX_NESTING: u32 = 256;

/// Write a C header declaring every type of `btf` (and of its base, for split BTF).
///
/// ```
/// # let bytes = ktstr_btf::testdata::tiny();
/// let btf = ktstr_btf::Btf::parse(&bytes)?;
/// let mut header = String::new();
/// ktstr_btf::c_dump::write_header(&btf, &mut header)?;
/// assert!(header.contains("struct rq {"));
/// assert!(header.contains("\tstruct scx_rq scx;"));
/// # Ok::<(), ktstr_btf::BtfError>(())
/// ```
pub fn write_header<W: Write>(btf: &Btf<'_>, out: &mut W) -> Result<(), BtfError> {
    let mut d = Dumper::new(btf, true);
    out.write_str(
        "/* SPDX-License-Identifier: GPL-2.0 */\n\
         /* Generated from BTF by ktstr-btf. Compile with -fms-extensions -Wno-microsoft-anon-tag. */\n\
         #ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n\n\
         #ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n\
         #pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)\n\
         #endif\n\n",
    )?;
    d.forward_declarations(out)?;
    for id in 1..btf.type_count() {
        d.emit_top(TypeId(id), out)?;
    }
    out.write_str(
        "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n#pragma clang attribute pop\n#endif\n\n\
         #endif /* __VMLINUX_H__ */\n",
    )?;
    Ok(())
}

/// The C spelling of one type, with anonymous structs shown as `struct {...}`.
pub(crate) fn type_name(btf: &Btf<'_>, id: TypeId) -> Result<String, BtfError> {
    let mut d = Dumper::new(btf, false);
    d.decl(id, String::new(), 0, 0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    InProgress,
    Done,
}

struct Dumper<'b, 'a> {
    btf: &'b Btf<'a>,
    /// Full definitions inline for anonymous types (a header), or `{...}` (a type name).
    full: bool,
    state: Vec<State>,
    /// `___N` suffix of each type's name (0 or 1: none).
    suffix: Vec<u32>,
    /// Anonymous types that some other type refers to (written inline there).
    referenced: Vec<bool>,
    /// Enumerator and typedef names used so far, with their counts.
    idents: BTreeMap<String, u32>,
    /// Memoised alignment of each type (0: not computed) and whether it is packed.
    aligns: Vec<u64>,
    packed: Vec<bool>,
    /// Work left before the dump gives up.
    steps: u64,
}

impl<'b, 'a> Dumper<'b, 'a> {
    fn new(btf: &'b Btf<'a>, full: bool) -> Self {
        let n = if full { btf.type_count() as usize } else { 0 };
        let mut d = Dumper {
            btf,
            full,
            state: vec![State::New; n],
            suffix: vec![0; n],
            referenced: vec![false; n],
            idents: BTreeMap::new(),
            aligns: vec![0; n],
            packed: vec![false; n],
            steps: u64::from(btf.type_count()) * 64 + (1 << 20),
        };
        if full {
            d.assign_names();
        }
        d
    }

    /// Number later types that reuse a name in their namespace (tags; typedefs).
    fn assign_names(&mut self) {
        let mut tags: BTreeMap<&'a str, u32> = BTreeMap::new();
        let mut typedefs: BTreeMap<&'a str, u32> = BTreeMap::new();
        let btf = self.btf;
        for t in btf.all_types() {
            let i = t.id().0 as usize;
            for r in referenced_ids(&t) {
                if let Some(slot) = self.referenced.get_mut(r.0 as usize) {
                    *slot = true;
                }
            }
            let name = t.name();
            if name.is_empty() {
                continue;
            }
            let map = match t.kind() {
                Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 => &mut tags,
                Kind::Typedef => &mut typedefs,
                _ => continue,
            };
            let c = map.entry(name).or_insert(0);
            *c += 1;
            if let Some(s) = self.suffix.get_mut(i) {
                *s = *c;
            }
        }
        for (name, count) in typedefs {
            self.idents.insert(name.to_string(), count);
        }
    }

    fn name_of(&self, t: &Type<'a>) -> String {
        if t.kind() == Kind::Typedef && t.name() == BUILTIN_VA_LIST {
            return RENAMED_VA_LIST.to_string();
        }
        let s = self.suffix.get(t.id().0 as usize).copied().unwrap_or(0);
        if s > 1 {
            format!("{}___{s}", t.name())
        } else {
            t.name().to_string()
        }
    }

    fn state(&self, id: TypeId) -> State {
        self.state
            .get(id.0 as usize)
            .copied()
            .unwrap_or(State::Done)
    }

    fn set_state(&mut self, id: TypeId, s: State) {
        if let Some(slot) = self.state.get_mut(id.0 as usize) {
            *slot = s;
        }
    }

    fn forward_declarations<W: Write>(&mut self, out: &mut W) -> Result<(), BtfError> {
        let mut any = false;
        let mut fwd_only: BTreeMap<&'a str, bool> = BTreeMap::new();
        let mut defined: BTreeMap<&'a str, ()> = BTreeMap::new();
        for t in self.btf.all_types() {
            let name = t.name();
            if name.is_empty() {
                continue;
            }
            match t.kind() {
                Kind::Struct | Kind::Union => {
                    let kw = if t.kind() == Kind::Union {
                        "union"
                    } else {
                        "struct"
                    };
                    writeln!(out, "{kw} {};", self.name_of(&t))?;
                    defined.insert(name, ());
                    any = true;
                }
                Kind::Fwd => {
                    fwd_only.entry(name).or_insert(t.kind_flag());
                }
                _ => {}
            }
        }
        for (name, is_union) in fwd_only {
            if !defined.contains_key(name) {
                let kw = if is_union { "union" } else { "struct" };
                writeln!(out, "{kw} {name};")?;
                any = true;
            }
        }
        if any {
            out.write_str("\n")?;
        }
        Ok(())
    }

    fn emit_top<W: Write>(&mut self, id: TypeId, out: &mut W) -> Result<(), BtfError> {
        let t = self.btf.ty(id)?;
        match t.kind() {
            Kind::Struct | Kind::Union if !t.name().is_empty() => self.emit_def(t, out, 0),
            Kind::Enum | Kind::Enum64 => {
                let anon_unused = t.name().is_empty()
                    && !self.referenced.get(id.0 as usize).copied().unwrap_or(true);
                if !t.name().is_empty() || anon_unused {
                    self.emit_def(t, out, 0)
                } else {
                    Ok(())
                }
            }
            Kind::Typedef => self.emit_typedef(t, out, 0),
            _ => Ok(()),
        }
    }

    /// Define a named struct, union or enum (or a stand-alone anonymous enum) once, after the
    /// types it needs.
    fn emit_def<W: Write>(&mut self, t: Type<'a>, out: &mut W, depth: u32) -> Result<(), BtfError> {
        if depth > MAX_NESTING {
            return Err(BtfError::TooDeep { id: t.id().0 });
        }
        if self.state(t.id()) != State::New {
            return Ok(());
        }
        self.set_state(t.id(), State::InProgress);
        if matches!(t.kind(), Kind::Struct | Kind::Union) {
            for m in t.members() {
                self.deps(m.ty, true, out, depth + 1)?;
            }
        }
        let text = match t.kind() {
            Kind::Struct | Kind::Union => self.composite_text(t, 0, depth)?,
            _ => self.enum_text(t, 0),
        };
        self.set_state(t.id(), State::Done);
        writeln!(out, "{text};\n")?;
        Ok(())
    }

    fn emit_typedef<W: Write>(
        &mut self,
        t: Type<'a>,
        out: &mut W,
        depth: u32,
    ) -> Result<(), BtfError> {
        if depth > MAX_NESTING {
            return Err(BtfError::TooDeep { id: t.id().0 });
        }
        if self.state(t.id()) != State::New {
            return Ok(());
        }
        self.set_state(t.id(), State::InProgress);
        let target = TypeId(t.size_or_type);
        self.deps(target, false, out, depth + 1)?;
        let text = self.decl(target, self.name_of(&t), 0, depth)?;
        self.set_state(t.id(), State::Done);
        writeln!(out, "typedef {text};\n")?;
        Ok(())
    }

    /// Emit what a use of `id` needs first. `by_value`: the use needs a complete type.
    fn deps<W: Write>(
        &mut self,
        id: TypeId,
        by_value: bool,
        out: &mut W,
        depth: u32,
    ) -> Result<(), BtfError> {
        if depth > MAX_NESTING {
            return Err(BtfError::TooDeep { id: id.0 });
        }
        self.step(id)?;
        let t = self.btf.ty(id)?;
        match t.kind() {
            Kind::Struct | Kind::Union => {
                if t.name().is_empty() {
                    // Written inline: its members are needed by value.
                    for m in t.members() {
                        self.deps(m.ty, true, out, depth + 1)?;
                    }
                    Ok(())
                } else if by_value {
                    self.emit_def(t, out, depth + 1)
                } else {
                    Ok(())
                }
            }
            Kind::Enum | Kind::Enum64 => {
                if t.name().is_empty() {
                    Ok(())
                } else {
                    self.emit_def(t, out, depth + 1)
                }
            }
            Kind::Typedef => {
                self.emit_typedef(t, out, depth + 1)?;
                if by_value {
                    self.deps(TypeId(t.size_or_type), true, out, depth + 1)?;
                }
                Ok(())
            }
            Kind::Array => {
                let elem = t.array().map_or(TypeId::VOID, |a| a.elem);
                self.deps(elem, true, out, depth + 1)
            }
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                self.deps(TypeId(t.size_or_type), by_value, out, depth + 1)
            }
            Kind::Ptr => self.deps(TypeId(t.size_or_type), false, out, depth + 1),
            Kind::FuncProto => {
                self.deps(TypeId(t.size_or_type), false, out, depth + 1)?;
                for p in t.params() {
                    self.deps(p.ty, false, out, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Count one unit of work; BTF that would make the header explode (anonymous types
    /// nested inside each other many times over) stops with an error instead.
    fn step(&mut self, id: TypeId) -> Result<(), BtfError> {
        self.steps = self
            .steps
            .checked_sub(1)
            .ok_or(BtfError::TooDeep { id: id.0 })?;
        Ok(())
    }

    /// (alignment, packed) of a type as clang will see it in the header, memoised so each
    /// struct is measured once. Same rules as [`Btf::align_of`].
    fn layout_of(&mut self, id: TypeId, depth: u32) -> (u64, bool) {
        let i = id.0 as usize;
        if let Some(&a) = self.aligns.get(i)
            && a != 0
        {
            return (a, self.packed.get(i).copied().unwrap_or(false));
        }
        let Ok(t) = self.btf.resolve(id) else {
            return (1, false);
        };
        if depth > MAX_NESTING {
            return (1, false);
        }
        let r = match t.kind() {
            Kind::Int | Kind::Float | Kind::Enum | Kind::Enum64 => {
                (scalar_align(u64::from(t.size_or_type)), false)
            }
            Kind::Ptr => (PTR_SIZE, false),
            Kind::Array => {
                let elem = t.array().map_or(TypeId::VOID, |a| a.elem);
                (self.layout_of(elem, depth + 1).0, false)
            }
            Kind::Struct | Kind::Union => {
                // Provisional value: a (malformed) cycle back to this struct sees alignment 1.
                if let Some(slot) = self.aligns.get_mut(t.id().0 as usize) {
                    *slot = 1;
                }
                let mut max = 1u64;
                let mut packed = false;
                for m in t.members() {
                    let a = self.layout_of(m.ty, depth + 1).0;
                    max = max.max(a);
                    let (off, bf) = self.btf.member_bits(t.kind_flag(), m);
                    if bf == 0 && off % (a * 8) != 0 {
                        packed = true;
                    }
                }
                if u64::from(t.size_or_type) % max != 0 {
                    packed = true;
                }
                (if packed { 1 } else { max }, packed)
            }
            _ => (1, false),
        };
        for j in [i, t.id().0 as usize] {
            if let Some(slot) = self.aligns.get_mut(j) {
                *slot = r.0;
            }
            if let Some(slot) = self.packed.get_mut(j) {
                *slot = r.1;
            }
        }
        r
    }

    /// `struct name {...}` / `union {...}` text, with members indented one level below `indent`.
    fn composite_text(
        &mut self,
        t: Type<'a>,
        indent: usize,
        depth: u32,
    ) -> Result<String, BtfError> {
        if depth > MAX_NESTING {
            return Err(BtfError::TooDeep { id: t.id().0 });
        }
        let kw = if t.kind() == Kind::Union {
            "union"
        } else {
            "struct"
        };
        let mut s = String::new();
        s.push_str(kw);
        if !t.name().is_empty() {
            s.push(' ');
            s.push_str(&self.name_of(&t));
        }
        if !self.full && t.name().is_empty() {
            s.push_str(" {...}");
            return Ok(s);
        }
        s.push_str(" {\n");
        let is_struct = t.kind() == Kind::Struct;
        let packed = self.layout_of(t.id(), 0).1;
        let size_bits = u64::from(t.size_or_type) * 8;
        let mut cur: u64 = 0;
        let inner_indent = indent + 1;
        for m in t.members() {
            let (m_off, bf) = self.btf.member_bits(t.kind_flag(), m);
            let m_size = self.btf.size_of(m.ty).unwrap_or(0) * 8;
            if is_struct {
                let natural = if bf > 0 {
                    if packed || m_size == 0 || (cur % m_size) + u64::from(bf) <= m_size {
                        cur
                    } else {
                        align_up(cur, m_size)
                    }
                } else {
                    let a = if packed {
                        8
                    } else {
                        self.layout_of(m.ty, 0).0 * 8
                    };
                    align_up(cur, a)
                };
                if natural != m_off && m_off > cur {
                    pad(&mut s, inner_indent, cur, m_off);
                }
            }
            let name = m.name.to_string();
            let decl = self.decl(m.ty, name, inner_indent, depth + 1)?;
            push_indent(&mut s, inner_indent);
            s.push_str(&decl);
            if bf > 0 {
                s.push_str(&format!(": {bf}"));
            }
            s.push_str(";\n");
            let end = m_off + if bf > 0 { u64::from(bf) } else { m_size };
            if is_struct {
                cur = cur.max(end);
            }
        }
        if is_struct && size_bits > cur {
            let a = if packed {
                8
            } else {
                self.layout_of(t.id(), 0).0 * 8
            };
            if align_up(cur, a) != size_bits {
                pad(&mut s, inner_indent, cur, size_bits);
            }
        }
        push_indent(&mut s, indent);
        s.push('}');
        if packed {
            s.push_str(" __attribute__((packed))");
        }
        Ok(s)
    }

    fn enum_text(&mut self, t: Type<'a>, indent: usize) -> String {
        let mut s = String::from("enum");
        if !t.name().is_empty() {
            s.push(' ');
            s.push_str(&self.name_of(&t));
        }
        if !self.full && t.name().is_empty() {
            s.push_str(" {...}");
            return s;
        }
        if t.vlen() == 0 {
            // An enum with no values is a forward declaration (a GNU extension).
            return s;
        }
        s.push_str(" {\n");
        let is64 = t.kind() == Kind::Enum64;
        for e in t.enumerators() {
            let c = self.idents.entry(e.name.to_string()).or_insert(0);
            *c += 1;
            let name = if *c > 1 {
                format!("{}___{}", e.name, *c)
            } else {
                e.name.to_string()
            };
            push_indent(&mut s, indent + 1);
            let v = e.value;
            let text = match (is64, v.signed) {
                (false, true) => format!("{}", v.as_i64() as i32),
                (false, false) => format!("{}", v.as_u64() as u32),
                (true, true) if v.as_i64() == i64::MIN => {
                    "(-9223372036854775807LL - 1)".to_string()
                }
                (true, true) => format!("{}LL", v.as_i64()),
                (true, false) => format!("{}ULL", v.as_u64()),
            };
            s.push_str(&format!("{name} = {text},\n"));
        }
        push_indent(&mut s, indent);
        s.push('}');
        if t.size_or_type < 4 {
            s.push_str(" __attribute__((packed))");
        }
        s
    }

    /// A declaration of `inner` (a name, possibly already wrapped in `*`, `[N]`, `(...)`) with
    /// type `id`.
    fn decl(
        &mut self,
        id: TypeId,
        inner: String,
        indent: usize,
        depth: u32,
    ) -> Result<String, BtfError> {
        if depth > MAX_NESTING {
            return Err(BtfError::TooDeep { id: id.0 });
        }
        self.step(id)?;
        let t = self.btf.ty(id)?;
        let with = |base: String, inner: &str| {
            if inner.is_empty() {
                base
            } else {
                format!("{base} {inner}")
            }
        };
        Ok(match t.kind() {
            Kind::Void => with("void".to_string(), &inner),
            Kind::Int | Kind::Float => with(t.name().to_string(), &inner),
            Kind::Struct | Kind::Union => {
                let base = if t.name().is_empty() {
                    self.composite_text(t, indent, depth + 1)?
                } else {
                    let kw = if t.kind() == Kind::Union {
                        "union"
                    } else {
                        "struct"
                    };
                    format!("{kw} {}", self.name_of(&t))
                };
                with(base, &inner)
            }
            Kind::Enum | Kind::Enum64 => {
                let base = if t.name().is_empty() {
                    self.enum_text(t, indent)
                } else {
                    format!("enum {}", self.name_of(&t))
                };
                with(base, &inner)
            }
            Kind::Fwd => {
                let kw = if t.kind_flag() { "union" } else { "struct" };
                with(format!("{kw} {}", t.name()), &inner)
            }
            Kind::Typedef => with(self.name_of(&t), &inner),
            Kind::Ptr => {
                let target = TypeId(t.size_or_type);
                let tk = self.skip_tags(target)?;
                let inner = if matches!(tk, Kind::Array | Kind::FuncProto) {
                    format!("(*{inner})")
                } else {
                    format!("*{inner}")
                };
                self.decl(target, inner, indent, depth + 1)?
            }
            Kind::Const | Kind::Volatile | Kind::Restrict => {
                let q = match t.kind() {
                    Kind::Const => "const",
                    Kind::Volatile => "volatile",
                    _ => "restrict",
                };
                let target = TypeId(t.size_or_type);
                if self.skip_tags(target)? == Kind::Ptr {
                    let inner = if inner.is_empty() {
                        q.to_string()
                    } else {
                        format!("{q} {inner}")
                    };
                    self.decl(target, inner, indent, depth + 1)?
                } else {
                    // A qualified array qualifies its elements, which may already say so.
                    let d = self.decl(target, inner, indent, depth + 1)?;
                    if d.starts_with(q) && d.as_bytes().get(q.len()) == Some(&b' ') {
                        d
                    } else {
                        format!("{q} {d}")
                    }
                }
            }
            Kind::Array => {
                let a = t.array().ok_or(BtfError::NoSize {
                    id: id.0,
                    kind: Kind::Array,
                })?;
                self.decl(a.elem, format!("{inner}[{}]", a.nelems), indent, depth + 1)?
            }
            Kind::FuncProto => {
                let mut params = String::new();
                let n = t.vlen();
                for (i, p) in t.params().enumerate() {
                    if i > 0 {
                        params.push_str(", ");
                    }
                    if p.ty == TypeId::VOID && p.name.is_empty() && i + 1 == usize::from(n) {
                        params.push_str("...");
                    } else {
                        params.push_str(&self.decl(p.ty, String::new(), indent, depth + 1)?);
                    }
                }
                if n == 0 {
                    params.push_str("void");
                }
                self.decl(
                    TypeId(t.size_or_type),
                    format!("{inner}({params})"),
                    indent,
                    depth + 1,
                )?
            }
            Kind::TypeTag => self.decl(TypeId(t.size_or_type), inner, indent, depth + 1)?,
            // Not types of values: a well-formed BTF never uses them as such.
            Kind::Func | Kind::Var | Kind::Datasec | Kind::DeclTag => {
                with("void".to_string(), &inner)
            }
        })
    }

    /// The kind under any type tags.
    fn skip_tags(&self, mut id: TypeId) -> Result<Kind, BtfError> {
        for _ in 0..crate::layout::MAX_DEPTH {
            let t = self.btf.ty(id)?;
            if t.kind() != Kind::TypeTag {
                return Ok(t.kind());
            }
            id = TypeId(t.size_or_type);
        }
        Err(BtfError::TooDeep { id: id.0 })
    }
}

/// Ids a type refers to (for finding anonymous types used elsewhere).
fn referenced_ids<'a>(t: &Type<'a>) -> impl Iterator<Item = TypeId> + 'a {
    let single = t.referenced();
    let arr = t.array().map(|a| a.elem);
    single
        .into_iter()
        .chain(arr)
        .chain(t.members().map(|m| m.ty))
        .chain(t.params().map(|p| p.ty))
}

fn align_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        return v;
    }
    v.div_ceil(a).saturating_mul(a)
}

fn push_indent(s: &mut String, n: usize) {
    for _ in 0..n {
        s.push('\t');
    }
}

/// Gaps up to this many bits are padded with unnamed bitfields, as bpftool does.
const BIG_GAP_BITS: u64 = 64 * 64;

/// Unnamed bitfields from bit `cur` to bit `to`: each chunk is aligned to its own width, so C
/// places it exactly where it stands (and unnamed bitfields do not change the alignment).
/// A gap of more than [`BIG_GAP_BITS`] becomes one `char` array (named for its offset) instead,
/// so a huge gap in malformed BTF cannot blow the header up.
fn pad(s: &mut String, indent: usize, mut cur: u64, to: u64) {
    while cur < to {
        let gap = to - cur;
        if cur.is_multiple_of(8) && gap >= BIG_GAP_BITS {
            push_indent(s, indent);
            s.push_str(&format!("char __pad_{}[{}];\n", cur / 8, gap / 8));
            cur += gap / 8 * 8;
            continue;
        }
        let (ty, bits) = if !cur.is_multiple_of(8) {
            ("char", gap.min(8 - cur % 8))
        } else if cur.is_multiple_of(64) && gap >= 64 {
            ("long", 64)
        } else if cur.is_multiple_of(32) && gap >= 32 {
            ("int", 32)
        } else if cur.is_multiple_of(16) && gap >= 16 {
            ("short", 16)
        } else {
            ("char", gap.min(8))
        };
        push_indent(s, indent);
        s.push_str(&format!("{ty}: {bits};\n"));
        cur += bits;
    }
}

const _: () = assert!(PTR_SIZE == 8);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;
    use crate::builder::BtfBuilder;

    fn dump(data: &[u8]) -> String {
        let btf = Btf::parse(data).unwrap();
        let mut s = String::new();
        write_header(&btf, &mut s).unwrap();
        s
    }

    #[test]
    fn tiny_header_has_definitions_in_dependency_order() {
        let h = dump(&crate::testdata::tiny());
        let dsq = h.find("struct scx_dispatch_q {").unwrap();
        let scx_rq = h.find("struct scx_rq {").unwrap();
        let rq = h.find("struct rq {").unwrap();
        assert!(dsq < scx_rq && scx_rq < rq);
        assert!(h.contains("\tunsigned int flags_bits: 3;"));
        assert!(h.contains("SCX_DSQ_GLOBAL = 9223372036854775809ULL,"));
        assert!(h.contains("\tunion {\n\t\tu64 clock;\n\t\tu64 clock_alt;\n\t};"));
        assert!(h.contains("\tchar comm[16];"));
        assert!(h.contains("\tvolatile long int __state;"));
        assert!(h.contains("typedef long long unsigned int u64;"));
    }

    #[test]
    fn gaps_are_padded_and_misaligned_structs_packed() {
        let mut b = BtfBuilder::new();
        let ch = b.int("char", 1, true);
        let int = b.int("int", 4, true);
        b.struct_type("gap", 24, &[("c", ch, 0, 0), ("i", int, 128, 0)]);
        b.struct_type("pk", 5, &[("c", ch, 0, 0), ("i", int, 8, 0)]);
        b.struct_type("big", 1 << 20, &[("c", ch, 0, 0)]);
        let h = dump(&b.finish());
        assert!(h.contains("struct gap {\n\tchar c;\n\tchar: 8;\n\tshort: 16;\n\tint: 32;\n\tlong: 64;\n\tint i;\n\tint: 32;\n};"), "{h}");
        assert!(h.contains("} __attribute__((packed));"));
        assert!(h.contains("char __pad_1[1048575];"));
    }

    #[test]
    fn duplicate_names_get_suffixes_and_function_pointers_parenthesise() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4, true);
        b.struct_type("dup", 4, &[("a", int, 0, 0)]);
        b.struct_type("dup", 8, &[("a", int, 0, 0), ("b", int, 32, 0)]);
        let proto = b.func_proto(int, &[("", int), ("", TypeId::VOID)]);
        let fp = b.ptr(proto);
        let arr = b.array(int, int, 4);
        let pa = b.ptr(arr);
        b.struct_type("fns", 16, &[("cb", fp, 0, 0), ("pa", pa, 64, 0)]);
        let h = dump(&b.finish());
        assert!(h.contains("struct dup___2 {"));
        assert!(h.contains("\tint (*cb)(int, ...);"), "{h}");
        assert!(h.contains("\tint (*pa)[4];"), "{h}");
    }
}
