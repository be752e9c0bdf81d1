//! [`Value`]: a typed place in guest memory — an address and a BTF type — that follows member
//! paths (`scx.local_dsq.nr`), pointers (`curr->comm`) and array indices, and reads itself as
//! an integer, a string, bytes or a decoded tree. Nothing is read until asked.

use ktstr_btf::{Btf, Decoded, Kind, TypeId};
use vm_memory::GuestMemory;

use crate::error::{Error, Result};
use crate::kernel::{GuestKernel, MAX_READ};

/// Longest `char *` string read.
const MAX_CSTR: usize = 4096;

/// A typed place in guest memory.
pub struct Value<'g, M: ?Sized> {
    k: &'g GuestKernel<'g, M>,
    addr: u64,
    ty: TypeId,
    /// For a bitfield: (bit offset from `addr`, width).
    bits: Option<(u32, u32)>,
}

impl<M: ?Sized> std::fmt::Debug for Value<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("ty", &self.ty)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl<M: ?Sized> Clone for Value<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: ?Sized> Copy for Value<'_, M> {}

impl<'g, M: GuestMemory + ?Sized> Value<'g, M> {
    pub(crate) fn new(k: &'g GuestKernel<'g, M>, addr: u64, ty: TypeId) -> Self {
        Value {
            k,
            addr,
            ty,
            bits: None,
        }
    }

    /// The kernel this value lives in.
    pub fn kernel(&self) -> &'g GuestKernel<'g, M> {
        self.k
    }

    /// Guest virtual address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// BTF type (unresolved: may be a typedef).
    pub fn ty(&self) -> TypeId {
        self.ty
    }

    fn btf(&self) -> &'g Btf<'g> {
        self.k.btf()
    }

    /// The C spelling of the type (`struct rq`, `u32`, `char [16]`).
    pub fn type_name(&self) -> String {
        self.btf()
            .type_name(self.ty)
            .unwrap_or_else(|_| format!("type {}", self.ty.0))
    }

    /// Size in bytes of the type.
    pub fn size(&self) -> Result<u64> {
        Ok(self.btf().size_of(self.ty)?)
    }

    /// Follow a path: members separated by `.`, pointers followed by `->`, array elements as
    /// `name[i]` (`scx.local_dsq.nr`, `curr->comm`, `cpu_capacity_orig`).
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let rq = kernel.per_cpu_var("runqueues", 1)?;
    /// assert_eq!(rq.field("scx.local_dsq.nr")?.u64()?, 2);
    /// assert_eq!(rq.field("curr->comm")?.string()?, "worker-1");
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn field(&self, path: &str) -> Result<Value<'g, M>> {
        let mut cur = *self;
        for (i, seg) in path.split("->").enumerate() {
            if i > 0 {
                cur = cur.deref()?;
            }
            if seg.is_empty() {
                return Err(Error::Btf(ktstr_btf::BtfError::BadPath {
                    path: path.to_string(),
                    what: "an empty step",
                }));
            }
            cur = cur.member(seg)?;
        }
        Ok(cur)
    }

    /// [`Value::field`], with `None` when the kernel's BTF lacks a member or type on the path
    /// (an older or newer kernel), and an error for everything else.
    pub fn get(&self, path: &str) -> Result<Option<Value<'g, M>>> {
        match self.field(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing_in_btf() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn member(&self, path: &str) -> Result<Value<'g, M>> {
        if self.bits.is_some() {
            return Err(self.wrong("a struct or union", path));
        }
        let m = self.k.member_of(self.ty, path)?;
        let addr = self.addr.wrapping_add(m.bit_offset / 8);
        let bits = m
            .is_bitfield()
            .then_some(((m.bit_offset % 8) as u32, m.bitfield_size));
        Ok(Value {
            k: self.k,
            addr,
            ty: m.ty,
            bits,
        })
    }

    fn wrong(&self, expected: &'static str, what: &str) -> Error {
        Error::WrongType {
            what: format!("{what} at {:#x}", self.addr),
            expected,
            found: self.type_name(),
        }
    }

    /// The pointee of a pointer. A NULL pointer is an error naming the type.
    pub fn deref(&self) -> Result<Value<'g, M>> {
        let t = self.btf().resolve(self.ty)?;
        if t.kind() != Kind::Ptr || self.bits.is_some() {
            return Err(self.wrong("a pointer", "dereference"));
        }
        let target = t.referenced().unwrap_or(TypeId::VOID);
        let p = self.k.read_u64(self.addr)?;
        if p == 0 {
            return Err(Error::Null {
                what: format!("{} at {:#x}", self.type_name(), self.addr),
            });
        }
        Ok(Value::new(self.k, p, target))
    }

    /// Element `i` of an array, or of the memory a pointer points at. Out-of-bounds indices of
    /// fixed-size arrays are errors; flexible arrays (`[0]`) and pointers are not checked.
    pub fn index(&self, i: u64) -> Result<Value<'g, M>> {
        let t = self.btf().resolve(self.ty)?;
        let (base, elem) = match (t.kind(), t.array(), t.referenced()) {
            (Kind::Array, Some(a), _) => {
                if a.nelems != 0 && i >= u64::from(a.nelems) {
                    return Err(self.wrong("an array that long", &format!("index {i}")));
                }
                (self.addr, a.elem)
            }
            (Kind::Ptr, _, Some(target)) => (self.deref()?.addr, target),
            _ => return Err(self.wrong("an array or pointer", &format!("index {i}"))),
        };
        let size = self.btf().size_of(elem)?;
        let off = size
            .checked_mul(i)
            .ok_or_else(|| self.wrong("an index that fits", &format!("index {i}")))?;
        Ok(Value::new(self.k, base.wrapping_add(off), elem))
    }

    /// The same place seen as the type named `ty_name`.
    pub fn cast(&self, ty_name: &str) -> Result<Value<'g, M>> {
        Ok(self.k.value(self.addr, ty_name)?.with_bits(None))
    }

    fn with_bits(mut self, bits: Option<(u32, u32)>) -> Self {
        self.bits = bits;
        self
    }

    /// The struct `ty_name` that holds this value as its member `path` (`container_of`).
    pub fn container_of(&self, ty_name: &str, path: &str) -> Result<Value<'g, M>> {
        let outer = self.k.value(0, ty_name)?;
        let m = self.k.member_of(outer.ty, path)?;
        Ok(Value::new(
            self.k,
            self.addr.wrapping_sub(m.bit_offset / 8),
            outer.ty,
        ))
    }

    /// The raw bytes of the value (its type's size, at most [`MAX_READ`]).
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let size = self.size()?;
        self.k.read_vec(self.addr, size, "a typed value")
    }

    /// An integer, enum, bool, char, pointer or bitfield, zero-extended.
    pub fn u64(&self) -> Result<u64> {
        self.scalar().map(|(v, _)| v)
    }

    /// An integer, enum, bool, char, pointer or bitfield, sign-extended if the type is signed.
    pub fn i64(&self) -> Result<i64> {
        let (v, width) = self.scalar()?;
        let signed = self
            .btf()
            .resolve(self.ty)
            .ok()
            .and_then(|t| match t.kind() {
                Kind::Int => t.int().map(|i| i.signed),
                Kind::Enum | Kind::Enum64 => Some(t.kind_flag()),
                _ => None,
            })
            .unwrap_or(false);
        if signed && width > 0 && width < 64 {
            let shift = 64 - width;
            return Ok(((v << shift) as i64) >> shift);
        }
        Ok(v as i64)
    }

    /// (value, width in bits).
    fn scalar(&self) -> Result<(u64, u32)> {
        let t = self.btf().resolve(self.ty)?;
        let size = match t.kind() {
            Kind::Int | Kind::Enum | Kind::Enum64 => t.size().unwrap_or(0),
            Kind::Ptr => 8,
            _ => return Err(self.wrong("an integer, enum or pointer", "read")),
        };
        if let Some((bit, width)) = self.bits {
            if width > 64 {
                return Err(self.wrong("a bitfield of at most 64 bits", "read"));
            }
            let mut b = [0u8; 16];
            let n = (bit + width).div_ceil(8) as usize;
            self.k.read(self.addr, b.get_mut(..n).unwrap_or(&mut []))?;
            let raw = u128::from_le_bytes(b) >> bit;
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            return Ok((raw as u64 & mask, width));
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(self.wrong("an integer of 1, 2, 4 or 8 bytes", "read"));
        }
        let mut b = [0u8; 8];
        self.k
            .read(self.addr, b.get_mut(..size as usize).unwrap_or(&mut []))?;
        // Legacy bitfield INTs keep their bits at an offset inside the storage.
        let (off, bits) = t
            .int()
            .map_or((0, size * 8), |i| (u32::from(i.offset), u32::from(i.bits)));
        let v = u64::from_le_bytes(b).checked_shr(off).unwrap_or(0);
        let bits = bits.min(64);
        let v = if bits == 64 { v } else { v & ((1 << bits) - 1) };
        Ok((v, bits))
    }

    /// A `char` array up to its first NUL, or the string a `char *` points at (at most 4 KiB).
    pub fn string(&self) -> Result<String> {
        let t = self.btf().resolve(self.ty)?;
        match t.kind() {
            Kind::Array => {
                let b = self.bytes()?;
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Ok(String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned())
            }
            Kind::Ptr => {
                let p = self.k.read_u64(self.addr)?;
                if p == 0 {
                    return Err(Error::Null {
                        what: format!("{} at {:#x}", self.type_name(), self.addr),
                    });
                }
                self.k.read_cstr(p, MAX_CSTR)
            }
            _ => Err(self.wrong("a char array or pointer", "string")),
        }
    }

    /// Read and decode the value: enumerator and flag names, cpumasks, strings, nested
    /// members (see [`ktstr_btf::Decoded`]). Bitfields decode as integers.
    pub fn decode(&self) -> Result<Decoded<'g>> {
        if self.bits.is_some() {
            return Ok(Decoded::Uint(u128::from(self.u64()?)));
        }
        let size = self.size()?.min(MAX_READ);
        let bytes = self.k.read_vec(self.addr, size, "a typed value")?;
        Ok(self.btf().decode(self.ty, &bytes)?)
    }
}
