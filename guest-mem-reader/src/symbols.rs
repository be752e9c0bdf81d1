//! A kernel's symbol table: names, link-time addresses and `nm` type letters, looked up by
//! name (binary search over a name-sorted index) or by address.
//!
//! Built once per kernel image from its kallsyms tables ([`crate::kallsyms`]), cached beside it
//! ([`KernelSymbols::load_or_build`]), or made from a list for crafted test kernels.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One symbol, borrowed from a [`KernelSymbols`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The name.
    pub name: &'a str,
    /// Link-time virtual address (add the KASLR offset for the running address).
    pub addr: u64,
    /// The `nm` type letter (`T`, `t`, `D`, `d`, `B`, `b`, `R`, `r`, ...).
    pub kind: u8,
}

/// One symbol as stored in memory and in the cache file (little-endian, 16 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub(crate) struct Entry {
    pub addr: U64,
    pub name_off: U32,
    pub name_len: U16,
    pub kind: u8,
    pub pad: u8,
}

/// A kernel's symbols, in address order.
#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    pub(crate) entries: Vec<Entry>,
    pub(crate) names: String,
    /// Indices into `entries`, sorted by name (then address).
    pub(crate) by_name: Vec<U32>,
}

impl KernelSymbols {
    /// Symbols from `(name, link-time address, type letter)` triples, in any order.
    ///
    /// ```
    /// use ktstr_guest_mem::KernelSymbols;
    /// let syms = KernelSymbols::from_entries([("jiffies", 0xffff_ffff_8300_7a00, b'D')]);
    /// assert_eq!(syms.address("jiffies"), Some(0xffff_ffff_8300_7a00));
    /// assert_eq!(syms.address("nope"), None);
    /// ```
    pub fn from_entries<'n>(entries: impl IntoIterator<Item = (&'n str, u64, u8)>) -> Self {
        let mut b = Builder::default();
        for (name, addr, kind) in entries {
            b.push(name.as_bytes(), addr, kind);
        }
        b.finish()
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sym(&self, e: &Entry) -> Symbol<'_> {
        let start = e.name_off.get() as usize;
        Symbol {
            name: self
                .names
                .get(start..start + usize::from(e.name_len.get()))
                .unwrap_or(""),
            addr: e.addr.get(),
            kind: e.kind,
        }
    }

    /// Every symbol, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'_>> + '_ {
        self.entries.iter().map(|e| self.sym(e))
    }

    /// The symbol named `name`: the global one (upper-case type letter) if there is one, else
    /// the lowest-addressed of the local (`static`) ones of that name.
    pub fn get<'s>(&'s self, name: &'s str) -> Option<Symbol<'s>> {
        let mut first = None;
        for s in self.all_named(name) {
            if s.kind.is_ascii_uppercase() {
                return Some(s);
            }
            first.get_or_insert(s);
        }
        first
    }

    /// Every symbol named `name`, lowest address first (`static` functions and variables of
    /// different files may share a name).
    pub fn all_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Symbol<'s>> + 's {
        let i = self.by_name.partition_point(|i| {
            self.entries
                .get(i.get() as usize)
                .map(|e| self.sym(e).name)
                .is_some_and(|n| n < name)
        });
        self.by_name
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| self.entries.get(i.get() as usize))
            .map(|e| self.sym(e))
            .take_while(move |s| s.name == name)
    }

    /// Link-time address of `name`.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.get(name).map(|s| s.addr)
    }

    /// The symbol at or below `addr` and the offset of `addr` in it (`func+0x1a`).
    pub fn symbolize(&self, addr: u64) -> Option<(Symbol<'_>, u64)> {
        let i = self.entries.partition_point(|e| e.addr.get() <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        Some((self.sym(e), addr - e.addr.get()))
    }
}

/// Accumulates symbols, then sorts them.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    entries: Vec<Entry>,
    names: String,
}

impl Builder {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Builder {
            entries: Vec::with_capacity(n),
            names: String::with_capacity(n * 24),
        }
    }

    /// Add a symbol. Names longer than a kernel's (`KSYM_NAME_LEN` is 512) are cut at 4 KiB.
    pub(crate) fn push(&mut self, name: &[u8], addr: u64, kind: u8) {
        let name = String::from_utf8_lossy(name.get(..name.len().min(4096)).unwrap_or(&[]));
        let name_off = self.names.len() as u32;
        self.names.push_str(&name);
        self.entries.push(Entry {
            addr: addr.into(),
            name_off: name_off.into(),
            name_len: (name.len() as u16).into(),
            kind,
            pad: 0,
        });
    }

    pub(crate) fn finish(mut self) -> KernelSymbols {
        // kallsyms is already in address order: the stable sort only checks it.
        self.entries.sort_by_key(|e| e.addr.get());
        let names = &self.names;
        let name = |e: &Entry| {
            let start = e.name_off.get() as usize;
            names
                .get(start..start + usize::from(e.name_len.get()))
                .unwrap_or("")
        };
        let mut keys: Vec<(&str, u64, u32)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (name(e), e.addr.get(), i as u32))
            .collect();
        keys.sort_unstable();
        let by_name = keys.into_iter().map(|(_, _, i)| U32::new(i)).collect();
        KernelSymbols {
            entries: self.entries,
            names: self.names,
            by_name,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;

    #[test]
    fn lookup_by_name_and_address() {
        let s = KernelSymbols::from_entries([
            ("b_func", 0x2000, b'T'),
            ("a_var", 0x3000, b'D'),
            ("dup", 0x5000, b't'),
            ("dup", 0x4000, b't'),
            ("_text", 0x1000, b'T'),
        ]);
        assert_eq!(s.len(), 5);
        assert_eq!(s.address("a_var"), Some(0x3000));
        assert_eq!(s.get("dup").unwrap().addr, 0x4000);
        let dups: Vec<u64> = s.all_named("dup").map(|s| s.addr).collect();
        assert_eq!(dups, [0x4000, 0x5000]);
        let g = KernelSymbols::from_entries([("x", 1, b't'), ("x", 2, b'D'), ("x", 3, b'd')]);
        assert_eq!(g.get("x").unwrap().addr, 2, "the global one wins");
        assert_eq!(s.get("b_func").unwrap().kind, b'T');
        assert!(s.get("c").is_none() && s.get("").is_none() && s.get("zzz").is_none());
        let (sym, off) = s.symbolize(0x2010).unwrap();
        assert_eq!((sym.name, off), ("b_func", 0x10));
        assert!(s.symbolize(0xfff).is_none());
        let addrs: Vec<u64> = s.iter().map(|s| s.addr).collect();
        assert!(addrs.windows(2).all(|w| w[0] <= w[1]));
        assert!(KernelSymbols::default().get("x").is_none());
    }
}
