//! Reading `/etc/ld.so.cache`, the name-to-path table `ldconfig` writes and
//! glibc's loader consults before its default directories.
//!
//! Only the "new" format is read (`glibc-ld.so.cache` + version `1.1`, glibc
//! 2.32's default), optionally behind an old-format (`ld.so-1.7.0`) prefix.
//! The layout follows glibc's `sysdeps/generic/dl-cache.h`: a 48-byte header,
//! then 24-byte entries whose key and value are offsets of NUL-terminated
//! strings counted from the start of the new-format header. The cache is in
//! the host's byte order. Entry flags are not interpreted: the closure checks
//! each candidate's ELF class and machine itself, as the loader also does.

use std::path::Path;

use zerocopy::byteorder::native_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::error::{InitramfsError, Result, io};

const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct NewHeader {
    magic: [u8; 20],
    nlibs: U32,
    len_strings: U32,
    flags: u8,
    pad: [u8; 3],
    extension_offset: U32,
    unused: [U32; 3],
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct NewEntry {
    flags: U32,
    key: U32,
    value: U32,
    osversion: U32,
    hwcap: U64,
}

const _: () = assert!(size_of::<NewHeader>() == 48 && size_of::<NewEntry>() == 24);

/// The parsed cache: `(soname, path, hwcap)` in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LdCache {
    entries: Vec<(String, String, u64)>,
}

impl LdCache {
    /// Read and parse the cache at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io(path, "read"))?;
        Self::parse(&bytes).map_err(|reason| InitramfsError::LdCache {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parse cache bytes. Never panics on malformed input.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, &'static str> {
        let mut start = 0usize;
        if bytes.starts_with(MAGIC_OLD) {
            // Old header (glibc's struct cache_file): the 11-byte magic, the u32
            // count aligned to 4 (offset 12), then 12-byte entries from offset
            // 16; the new table follows at 8-byte alignment.
            const OLD_COUNT: usize = 12;
            let count = bytes
                .get(OLD_COUNT..OLD_COUNT + 4)
                .and_then(|b| U32::read_from_bytes(b).ok())
                .ok_or("truncated old-format header")?;
            let end = (count.get() as usize)
                .checked_mul(12)
                .and_then(|n| n.checked_add(OLD_COUNT + 4))
                .ok_or("old-format count overflows")?;
            start = end.checked_add(7).ok_or("old-format count overflows")? & !7;
        }
        let new = bytes.get(start..).ok_or("no new-format table")?;
        let (header, rest) = NewHeader::ref_from_prefix(new).map_err(|_| "truncated header")?;
        if header.magic != MAGIC_NEW {
            return Err("not a glibc-ld.so.cache1.1 file");
        }
        let nlibs = header.nlibs.get() as usize;
        let table_len = nlibs
            .checked_mul(size_of::<NewEntry>())
            .ok_or("entry count overflows")?;
        let table = rest
            .get(..table_len)
            .ok_or("entry table runs past the end")?;
        let entries =
            <[NewEntry]>::ref_from_bytes(table).map_err(|_| "entry table is misaligned")?;
        let string = |off: U32| -> std::result::Result<String, &'static str> {
            let tail = new
                .get(off.get() as usize..)
                .ok_or("string offset out of range")?;
            let len = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or("string not NUL-terminated")?;
            String::from_utf8(tail[..len].to_vec()).map_err(|_| "string is not UTF-8")
        };
        let entries = entries
            .iter()
            .map(|e| Ok((string(e.key)?, string(e.value)?, e.hwcap.get())))
            .collect::<std::result::Result<_, &'static str>>()?;
        Ok(Self { entries })
    }

    /// Paths the cache gives for `soname`, baseline entries (no hardware
    /// capability requirement) first, each group in file order.
    pub fn lookup<'a>(&'a self, soname: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let matching = move |baseline: bool| {
            self.entries
                .iter()
                .filter(move |(k, _, hwcap)| k == soname && (*hwcap == 0) == baseline)
                .map(|(_, v, _)| v.as_str())
        };
        matching(true).chain(matching(false))
    }
}

/// Parses cache bytes and looks every soname up: the number of entries and of
/// paths found. Not API: the entry point of the fuzz target and its corpus
/// replay (`fuzz/`, `tests/fuzz_corpus.rs`), as the cache is otherwise read
/// only from a file.
#[doc(hidden)]
pub fn exercise(bytes: &[u8]) -> std::result::Result<(usize, usize), &'static str> {
    let cache = LdCache::parse(bytes)?;
    let found = cache
        .entries
        .iter()
        .map(|(soname, _, _)| cache.lookup(soname).count())
        .sum();
    Ok((cache.entries.len(), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a new-format cache holding `entries` (key, value, hwcap).
    pub(crate) fn build(entries: &[(&str, &str, u64)]) -> Vec<u8> {
        let table_end = 48 + 24 * entries.len();
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for (k, v, hwcap) in entries {
            let koff = (table_end + strings.len()) as u32;
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            let voff = (table_end + strings.len()) as u32;
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
            for word in [0x0303u32, koff, voff, 0] {
                table.extend_from_slice(&word.to_ne_bytes());
            }
            table.extend_from_slice(&hwcap.to_ne_bytes());
        }
        let mut out = MAGIC_NEW.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        out.extend_from_slice(&[2, 0, 0, 0]);
        out.extend_from_slice(&[0; 16]);
        out.extend(table);
        out.extend(strings);
        out
    }

    #[test]
    fn parses_a_built_cache_baseline_first() {
        let bytes = build(&[
            (
                "libfoo.so.1",
                "/x/glibc-hwcaps/x86-64-v3/libfoo.so.1",
                1 << 62,
            ),
            ("libfoo.so.1", "/usr/lib/libfoo.so.1", 0),
            ("libbar.so.2", "/usr/lib/libbar.so.2", 0),
        ]);
        let cache = LdCache::parse(&bytes).expect("valid");
        let found: Vec<_> = cache.lookup("libfoo.so.1").collect();
        assert_eq!(
            found,
            [
                "/usr/lib/libfoo.so.1",
                "/x/glibc-hwcaps/x86-64-v3/libfoo.so.1"
            ]
        );
        assert_eq!(cache.lookup("libnone.so").count(), 0);
    }

    #[test]
    fn reads_the_host_cache() {
        // Debian's ldconfig writes /etc/ld.so.cache; libc is always in it.
        let cache = LdCache::read(Path::new("/etc/ld.so.cache")).expect("host cache parses");
        assert!(cache.lookup("libc.so.6").next().is_some());
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let bytes = build(&[("a", "b", 0)]);
        for n in 0..bytes.len() {
            let _ = LdCache::parse(&bytes[..n]);
        }
        assert!(LdCache::parse(&bytes[..40]).is_err());
    }
}
