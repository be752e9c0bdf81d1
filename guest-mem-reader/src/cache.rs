//! The symbol cache: a kernel's decoded kallsyms, written once beside the image so later tests
//! load it instead of decoding again.
//!
//! Binary, little-endian, laid out so loading is a copy and a bounds check (no parsing, no
//! sorting — what makes a text `System.map` as slow to load as decoding the image again in
//! the unoptimized test profile):
//!
//! ```text
//! 0   magic       "KTSTRKS1"
//! 8   image_len   u64  size of the vmlinux it was built from
//! 16  image_mtime u64  its modification time, ns since the epoch
//! 24  count       u32  symbols
//! 28  names_len   u32  bytes of names
//! 32  entries     count x { addr u64, name_off u32, name_len u16, kind u8, pad u8 }, by address
//!     by_name     count x u32, indices of entries sorted by name
//!     names       names_len bytes of UTF-8
//! ```
//!
//! A cache whose image size or time differs from the image's, or that is malformed in any
//! way, is rebuilt.

use std::path::Path;
use std::time::UNIX_EPOCH;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::kallsyms;
use crate::symbols::{Entry, KernelSymbols};

const MAGIC: [u8; 8] = *b"KTSTRKS1";

#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    image_len: U64,
    image_mtime: U64,
    count: U32,
    names_len: U32,
}

/// (size, mtime in ns) of the image: what a cache is checked against.
type ImageKey = (u64, u64);

impl KernelSymbols {
    /// The symbols of the ELF vmlinux at `vmlinux`: loaded from `cache` if it was built from
    /// this very file (same size and modification time), else decoded from the image's
    /// kallsyms tables and written to `cache` (atomically, through a temporary file).
    ///
    /// ```no_run
    /// use ktstr_guest_mem::KernelSymbols;
    /// let dir = std::path::Path::new("/root/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64");
    /// let syms = KernelSymbols::load_or_build(&dir.join("vmlinux"), &dir.join("kallsyms.ktstr"))?;
    /// println!("runqueues at {:#x?}", syms.address("runqueues"));
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn load_or_build(vmlinux: &Path, cache: &Path) -> Result<KernelSymbols> {
        let key = image_key(vmlinux)?;
        if let Ok(bytes) = std::fs::read(cache)
            && let Ok(syms) = parse(&bytes, Some(key), cache)
        {
            return Ok(syms);
        }
        let syms = kallsyms::from_vmlinux(vmlinux)?;
        syms.write_cache(cache, key)?;
        Ok(syms)
    }

    /// Load `cache` without checking which image it was built from.
    pub fn load_cache(cache: &Path) -> Result<KernelSymbols> {
        let bytes = std::fs::read(cache).map_err(|source| Error::Io {
            path: cache.to_owned(),
            source,
        })?;
        parse(&bytes, None, cache)
    }

    fn write_cache(&self, cache: &Path, key: ImageKey) -> Result<()> {
        let header = Header {
            magic: MAGIC,
            image_len: key.0.into(),
            image_mtime: key.1.into(),
            count: (self.entries.len() as u32).into(),
            names_len: (self.names.len() as u32).into(),
        };
        let mut out = Vec::with_capacity(32 + self.entries.len() * 20 + self.names.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.entries.as_bytes());
        out.extend_from_slice(self.by_name.as_bytes());
        out.extend_from_slice(self.names.as_bytes());
        let io = |source| Error::Io {
            path: cache.to_owned(),
            source,
        };
        let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, out).map_err(io)?;
        std::fs::rename(&tmp, cache).map_err(io)
    }
}

fn image_key(vmlinux: &Path) -> Result<ImageKey> {
    let meta = std::fs::metadata(vmlinux).map_err(|source| Error::Io {
        path: vmlinux.to_owned(),
        source,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    Ok((meta.len(), mtime))
}

/// Parse a cache file; with `key`, only one built from that image.
fn parse(bytes: &[u8], key: Option<ImageKey>, path: &Path) -> Result<KernelSymbols> {
    let bad = |what: String| Error::Cache {
        path: path.to_owned(),
        what,
    };
    let (h, rest) =
        Header::ref_from_prefix(bytes).map_err(|_| bad("shorter than its header".into()))?;
    if h.magic != MAGIC {
        return Err(bad("not a ktstr symbol cache (bad magic)".into()));
    }
    let file_key = (h.image_len.get(), h.image_mtime.get());
    if let Some(key) = key
        && key != file_key
    {
        return Err(bad(format!(
            "built from another image (size {}, mtime {}; this one: size {}, mtime {})",
            file_key.0, file_key.1, key.0, key.1
        )));
    }
    let count = h.count.get() as usize;
    let (entries, rest) = <[Entry]>::ref_from_prefix_with_elems(rest, count)
        .map_err(|_| bad(format!("too short for {count} symbols")))?;
    let (by_name, rest) = <[U32]>::ref_from_prefix_with_elems(rest, count)
        .map_err(|_| bad(format!("too short for {count} symbols")))?;
    if rest.len() != h.names_len.get() as usize {
        return Err(bad(format!(
            "{} bytes of names, the header says {}",
            rest.len(),
            h.names_len.get()
        )));
    }
    let names = std::str::from_utf8(rest).map_err(|_| bad("names are not UTF-8".into()))?;
    let mut prev = 0;
    for (i, e) in entries.iter().enumerate() {
        let end = e.name_off.get() as usize + usize::from(e.name_len.get());
        let a = e.addr.get();
        if a < prev
            || !names.is_char_boundary(e.name_off.get() as usize)
            || !names.is_char_boundary(end)
            || end > names.len()
        {
            return Err(bad(format!("symbol {i} is out of order or out of bounds")));
        }
        prev = a;
    }
    if by_name.iter().any(|i| i.get() as usize >= count) {
        return Err(bad("the name index points past the symbols".into()));
    }
    Ok(KernelSymbols {
        entries: entries.to_vec(),
        names: names.to_owned(),
        by_name: by_name.to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("kallsyms.ktstr");
        let syms = KernelSymbols::from_entries([
            ("_text", 0xffff_ffff_8100_0000, b'T'),
            ("jiffies", 0xffff_ffff_8300_7a00, b'D'),
        ]);
        syms.write_cache(&cache, (10, 20)).unwrap();
        let bytes = std::fs::read(&cache).unwrap();
        assert_eq!(bytes.len(), 32 + 2 * 20 + "_textjiffies".len());
        let back = parse(&bytes, Some((10, 20)), &cache).unwrap();
        assert_eq!(back.address("jiffies"), Some(0xffff_ffff_8300_7a00));
        assert_eq!(back.get("_text").unwrap().kind, b'T');
        assert!(KernelSymbols::load_cache(&cache).is_ok());
        let e = parse(&bytes, Some((10, 21)), &cache).unwrap_err();
        assert!(e.to_string().contains("another image"), "{e}");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(
            parse(&bad, None, &cache)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        // Every truncation and every single-byte corruption is an error or a harmless table,
        // never a panic.
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut], None, &cache).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xa5;
            if let Ok(s) = parse(&b, None, &cache) {
                let _ = (s.get("jiffies"), s.symbolize(0xffff_ffff_8300_7a10));
            }
        }
    }

    #[test]
    fn a_file_that_is_no_kernel_is_an_error_and_writes_no_cache() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("vmlinux");
        std::fs::write(&img, b"not an elf").unwrap();
        let cache = dir.path().join("kallsyms.ktstr");
        let e = KernelSymbols::load_or_build(&img, &cache).unwrap_err();
        assert!(e.to_string().contains("not an ELF file"), "{e}");
        assert!(!cache.exists());
        let e = KernelSymbols::load_or_build(&dir.path().join("missing"), &cache).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }
}
