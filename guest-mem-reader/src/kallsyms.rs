//! Decode the kernel's own kallsyms tables out of a stripped `vmlinux`, on the host.
//!
//! The Debian image has no `.symtab`, but `CONFIG_KALLSYMS_ALL` puts every symbol in
//! `.rodata`, compressed by `scripts/kallsyms` (the format is described in the kernel's
//! `scripts/kallsyms.c` and read back by `kernel/kallsyms.c`):
//!
//! ```text
//! kallsyms_num_syms     u32  N
//! kallsyms_names        N entries: ULEB128 length (1-2 bytes), then that many token indices;
//!                       the expanded bytes are the nm type letter and the name
//! kallsyms_markers      u32 per 256 entries: offset of entry 256*i in kallsyms_names
//! kallsyms_token_table  256 NUL-terminated tokens
//! kallsyms_token_index  u16[256]: offset of each token in the table
//! kallsyms_offsets      i32[N]: address = &kallsyms_offsets[i] + kallsyms_offsets[i]
//!                       (place-relative, Debian's 7.x), or relative_base + (u32)offset with
//!                       kallsyms_relative_base after the offsets (6.10 to 6.18; before
//!                       6.10 both come before kallsyms_num_syms); with
//!                       CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64 SMP before 6.15) an offset
//!                       >= 0 is the address itself, a negative one relative_base - 1 - offset
//! ```
//!
//! None of the table symbols can be looked up (they are what we are decoding), so the tables
//! are found by their shape: the token table holds every character used in names as a
//! one-character token at its own code, so `"0\0" "1\0" ... "9\0"` appears at token 0x30.
//! Each candidate is accepted only if the token index after it describes the table exactly,
//! the markers before it agree with a full walk of the names stream, the stream ends exactly
//! at the markers, `num_syms` precedes it, the addresses come out sorted and `_text` is the
//! start of `.text`. Any failed check moves to the next candidate or ends in an error naming
//! the check.

use std::path::Path;

use object::{Object, ObjectSection};

use crate::error::{Error, Result};
use crate::symbols::{Builder, KernelSymbols};

/// Longest name `scripts/kallsyms` accepts (`KSYM_NAME_LEN`).
const KSYM_NAME_LEN: usize = 512;
/// Most symbols believed (a kernel has ~200k; this bounds allocations on garbage).
const MAX_SYMS: u32 = 1 << 24;

/// `"0\0" .. "9\0"`: the digits as one-character tokens at their own codes.
const DIGITS: &[u8; 20] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";

/// Why the kallsyms tables could not be found or decoded. The tables are found by their
/// shape; each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KallsymsError {
    /// The image is not an ELF file.
    #[error("the kernel image is not an ELF file: {0}")]
    NotElf(object::Error),
    /// The image lacks a section the decoding needs.
    #[error("it has no {0} section")]
    NoSection(&'static str),
    /// `.rodata` could not be read.
    #[error("reading .rodata: {0}")]
    ReadRodata(object::Error),
    /// No candidate for `kallsyms_token_table`.
    #[error("no token table (\"0\\0\"..\"9\\0\" at token 0x30) in .rodata")]
    NoTokenTable,
    /// No `kallsyms_markers` before a token table.
    #[error("no kallsyms_markers right before the token table")]
    NoMarkers,
    /// The markers claim a names stream that would start before `.rodata`.
    #[error("markers point before .rodata")]
    MarkersBeforeRodata,
    /// No names stream matches the markers and a `kallsyms_num_syms`.
    #[error("no kallsyms_names stream agrees with kallsyms_markers and kallsyms_num_syms")]
    NoNamesStream,
    /// Every layout of the address table failed a check.
    #[error(
        "found the names and token tables but no address table fits: {}",
        join(tried)
    )]
    NoAddressTable {
        /// Why each layout tried failed, in order.
        tried: Vec<KallsymsError>,
    },
    /// An address table runs past `.rodata`.
    #[error("the address table runs past .rodata")]
    AddressesPastRodata,
    /// Decoded addresses go down at `entry`.
    #[error("addresses are not sorted at entry {entry}")]
    Unsorted {
        /// The entry.
        entry: usize,
    },
    /// A name's tokens run past `.rodata`.
    #[error("a name runs past .rodata")]
    NamePastRodata,
    /// An entry expands to no bytes (not even its type letter).
    #[error("entry {entry} expands to nothing")]
    EmptyName {
        /// The entry.
        entry: usize,
    },
    /// `_text` does not land at the start of `.text`.
    #[error("_text does not decode to .text's {text_addr:#x}")]
    TextMismatch {
        /// `.text`'s address.
        text_addr: u64,
    },
}

fn join(errors: &[KallsymsError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Symbols of the ELF vmlinux at `path`, decoded from its kallsyms tables. Only the section
/// headers, `.text`'s address and `.rodata` are read.
pub fn from_vmlinux(path: &Path) -> Result<KernelSymbols> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let cache = object::ReadCache::new(std::io::BufReader::new(file));
    let image = |source| Error::KallsymsIn {
        path: path.to_owned(),
        source,
    };
    let elf = object::File::parse(&cache).map_err(|e| image(KallsymsError::NotElf(e)))?;
    let (rodata, rodata_addr, text_addr) = sections(&elf).map_err(image)?;
    decode(rodata, rodata_addr, text_addr)
}

/// Symbols of an ELF vmlinux held in memory.
pub fn from_elf_bytes(elf: &[u8]) -> Result<KernelSymbols> {
    let file = object::File::parse(elf).map_err(KallsymsError::NotElf)?;
    let (rodata, rodata_addr, text_addr) = sections(&file)?;
    decode(rodata, rodata_addr, text_addr)
}

/// `.rodata`'s bytes and address and `.text`'s address.
fn sections<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
) -> std::result::Result<(&'d [u8], u64, u64), KallsymsError> {
    let rodata = elf
        .section_by_name(".rodata")
        .ok_or(KallsymsError::NoSection(".rodata"))?;
    let text = elf
        .section_by_name(".text")
        .ok_or(KallsymsError::NoSection(".text"))?;
    let bytes = rodata.data().map_err(KallsymsError::ReadRodata)?;
    Ok((bytes, rodata.address(), text.address()))
}

/// Decode kallsyms from `.rodata` (`ro`, loaded at `ro_addr`); `text_addr` is where `_text`
/// must land.
pub fn decode(ro: &[u8], ro_addr: u64, text_addr: u64) -> Result<KernelSymbols> {
    let mut last = KallsymsError::NoTokenTable;
    let mut from = 0;
    while let Some(p) = find(ro, DIGITS, from) {
        from = p + 1;
        let Some(tokens) = token_table_at(ro, p) else {
            continue;
        };
        match tables_around(ro, &tokens).and_then(|t| addresses(ro, ro_addr, text_addr, &t)) {
            Ok(syms) => return Ok(syms),
            Err(e) => last = e,
        }
    }
    Err(last.into())
}

/// Offset of the first `pat` in `hay` at or after `from`.
fn find(hay: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    let first = *pat.first()?;
    let mut i = from;
    while i < hay.len() {
        let rel = hay.get(i..)?.iter().position(|&b| b == first)?;
        i += rel;
        if hay.get(i..i.checked_add(pat.len())?)? == pat {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The 256 tokens of a token table, and where the table and its index live.
struct Tokens<'a> {
    /// Offset in `.rodata` of `kallsyms_token_table`.
    table: usize,
    /// Offset just past `kallsyms_token_index`.
    index_end: usize,
    tokens: Vec<&'a [u8]>,
}

/// The token table whose token 0x30 ("0") starts at `p`, if an index after it describes it.
fn token_table_at(ro: &[u8], p: usize) -> Option<Tokens<'_>> {
    // Step over tokens 0x30..=0xff to the table's end.
    let mut q = p;
    for _ in 0x30..0x100 {
        let len = ro.get(q..)?.iter().take(256).position(|&b| b == 0)?;
        q += len + 1;
    }
    for align in [1usize, 2, 4, 8] {
        let at = q.checked_next_multiple_of(align)?;
        let raw = ro.get(at..at + 512)?;
        let idx: Vec<usize> = raw
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let Some(table) = p.checked_sub(*idx.get(0x30)?) else {
            continue;
        };
        if idx.first() != Some(&0) || table.checked_add(*idx.get(255)?)? >= q {
            continue;
        }
        // Each token runs exactly from its index to the next one's, NUL-terminated.
        let mut tokens = Vec::with_capacity(256);
        let ok = (0..256).all(|i| {
            let start = table + idx[i];
            let end = if i == 255 { q } else { table + idx[i + 1] };
            match (end.checked_sub(1), ro.get(start..end.saturating_sub(1))) {
                (Some(nul), Some(tok)) if end > start && ro.get(nul) == Some(&0) => {
                    tokens.push(tok);
                    !tok.contains(&0)
                }
                _ => false,
            }
        });
        if ok {
            return Some(Tokens {
                table,
                index_end: at + 512,
                tokens,
            });
        }
    }
    None
}

/// Where the tables before the token table live.
struct Tables<'a> {
    tokens: Vec<&'a [u8]>,
    index_end: usize,
    /// Offset of `kallsyms_num_syms`.
    num_syms_at: usize,
    num_syms: u32,
    /// Offsets in `kallsyms_names` of each entry.
    names: Vec<(usize, usize)>,
}

fn u32_at(ro: &[u8], at: usize) -> Option<u32> {
    let b = ro.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// One names-stream entry at `p`: (start of its token bytes, their count).
fn entry_at(ro: &[u8], p: usize) -> Option<(usize, usize)> {
    let b0 = usize::from(*ro.get(p)?);
    if b0 & 0x80 == 0 {
        (b0 > 0).then_some((p + 1, b0))
    } else {
        let b1 = usize::from(*ro.get(p + 1)?);
        let len = (b0 & 0x7f) | (b1 << 7);
        (len <= KSYM_NAME_LEN * 4).then_some((p + 2, len))
    }
}

/// Find markers (just before the token table), the names stream and `num_syms`.
fn tables_around<'a>(
    ro: &'a [u8],
    t: &Tokens<'a>,
) -> std::result::Result<Tables<'a>, KallsymsError> {
    let mut why = KallsymsError::NoMarkers;
    for pad in [0usize, 4] {
        let Some(end) = t.table.checked_sub(pad) else {
            continue;
        };
        let markers = markers_ending_at(ro, end);
        if markers.is_empty() {
            continue;
        }
        let start = end - markers.len() * 4;
        match names_before(ro, start, &markers) {
            Ok((num_syms_at, num_syms, names)) => {
                return Ok(Tables {
                    tokens: t.tokens.clone(),
                    index_end: t.index_end,
                    num_syms_at,
                    num_syms,
                    names,
                });
            }
            Err(e) => why = e,
        }
    }
    Err(why)
}

/// The markers array ending at `end`: walking back, values strictly decrease down to a 0.
fn markers_ending_at(ro: &[u8], end: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = end;
    let mut above = u32::MAX;
    while out.len() < (MAX_SYMS / 256) as usize {
        let Some(p) = at.checked_sub(4) else {
            return Vec::new();
        };
        let Some(v) = u32_at(ro, p) else {
            return Vec::new();
        };
        if v >= above {
            return Vec::new();
        }
        out.push(v);
        at = p;
        above = v;
        if v == 0 {
            out.reverse();
            return out;
        }
    }
    Vec::new()
}

/// Locate the names stream ending at (or up to 7 padding bytes before) `end`, agreeing with
/// `markers`, with `num_syms` just before it. Returns (offset of num_syms, N, entries).
type Names = (usize, u32, Vec<(usize, usize)>);
fn names_before(
    ro: &[u8],
    end: usize,
    markers: &[u32],
) -> std::result::Result<Names, KallsymsError> {
    let nblocks = markers.len() as u64;
    let last = *markers.last().ok_or(KallsymsError::NoMarkers)? as usize;
    let lo_n = ((nblocks - 1) * 256 + 1) as u32;
    let hi_n = (nblocks * 256) as u32;
    // The last block holds 1..=256 entries of at most 2 + 4 * KSYM_NAME_LEN bytes each.
    let newest = end
        .checked_sub(last + 2)
        .ok_or(KallsymsError::MarkersBeforeRodata)?;
    let oldest = newest.saturating_sub(256 * (2 + KSYM_NAME_LEN * 4));
    for s in (oldest..=newest).rev() {
        for gap in [4usize, 8] {
            let Some(at) = s.checked_sub(gap) else {
                continue;
            };
            let Some(n) = u32_at(ro, at) else { continue };
            if n < lo_n || n > hi_n || (gap == 8 && u32_at(ro, s - 4) != Some(0)) {
                continue;
            }
            if let Some(names) = walk_names(ro, s, n, markers, end) {
                return Ok((at, n, names));
            }
        }
    }
    Err(KallsymsError::NoNamesStream)
}

/// Walk `n` entries from `s`: every 256th at its marker, the last ending at `end` (or in the
/// zero padding just before it).
fn walk_names(
    ro: &[u8],
    s: usize,
    n: u32,
    markers: &[u32],
    end: usize,
) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::with_capacity(n as usize);
    let mut p = s;
    for i in 0..n as usize {
        if i % 256 == 0 && p - s != *markers.get(i / 256)? as usize {
            return None;
        }
        let (start, len) = entry_at(ro, p)?;
        p = start + len;
        if p > end {
            return None;
        }
        out.push((start, len));
    }
    (end - p < 8 && ro.get(p..end)?.iter().all(|&b| b == 0)).then_some(out)
}

/// Expand names and compute addresses; check they are sorted and `_text` is `.text`'s start.
fn addresses(
    ro: &[u8],
    ro_addr: u64,
    text_addr: u64,
    t: &Tables<'_>,
) -> std::result::Result<KernelSymbols, KallsymsError> {
    let n = t.num_syms as usize;
    // 7.x: place-relative offsets right after the token index.
    let mut tried = Vec::new();
    for align in [4usize, 8] {
        let Some(at) = t.index_end.checked_next_multiple_of(align) else {
            continue;
        };
        let rel = |i: usize| -> Option<u64> {
            let v = u32_at(ro, at + 4 * i)? as i32;
            let place = ro_addr.checked_add((at + 4 * i) as u64)?;
            Some(place.wrapping_add_signed(i64::from(v)))
        };
        match build(ro, t, rel, text_addr) {
            Ok(s) => return Ok(s),
            Err(e) => tried.push(e),
        }
    }
    // 6.10 to 6.18: offsets from kallsyms_relative_base, the offsets right after the token
    // index and the base (8-aligned) right after them.
    for align in [4usize, 8] {
        let Some(offs_at) = t.index_end.checked_next_multiple_of(align) else {
            continue;
        };
        let Some(base_at) = offs_at
            .checked_add(4 * n)
            .and_then(|e| e.checked_next_multiple_of(8))
        else {
            continue;
        };
        let Some(base) = ro
            .get(base_at..base_at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        else {
            continue;
        };
        for decode in [relative, absolute_percpu] {
            match build(
                ro,
                t,
                |i| Some(decode(base, u32_at(ro, offs_at + 4 * i)?)),
                text_addr,
            ) {
                Ok(s) => return Ok(s),
                Err(e) => tried.push(e),
            }
        }
    }
    // Before 6.10: offsets from kallsyms_relative_base, both just before num_syms.
    if let Some(base_at) = t.num_syms_at.checked_sub(8) {
        let base = ro
            .get(base_at..base_at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        let offs_at = base_at.checked_sub(4 * n);
        if let (Some(base), Some(offs_at)) = (base, offs_at) {
            for decode in [relative, absolute_percpu] {
                let addr = |i| Some(decode(base, u32_at(ro, offs_at + 4 * i)?));
                match build(ro, t, addr, text_addr) {
                    Ok(s) => return Ok(s),
                    Err(e) => tried.push(e),
                }
            }
        }
    }
    Err(KallsymsError::NoAddressTable { tried })
}

/// `kallsyms_relative_base + (u32)offset`: every offset from the base.
fn relative(base: u64, offset: u32) -> u64 {
    base.wrapping_add(u64::from(offset))
}

/// `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (x86-64 SMP before 6.15, whose per-CPU symbols sit at
/// small absolute addresses): a non-negative offset is the address itself, a negative one
/// counts down from `kallsyms_relative_base - 1`.
fn absolute_percpu(base: u64, offset: u32) -> u64 {
    let v = offset as i32;
    if v >= 0 {
        u64::from(offset)
    } else {
        base.wrapping_sub(1).wrapping_sub_signed(i64::from(v))
    }
}

fn build(
    ro: &[u8],
    t: &Tables<'_>,
    addr: impl Fn(usize) -> Option<u64>,
    text_addr: u64,
) -> std::result::Result<KernelSymbols, KallsymsError> {
    let mut b = Builder::with_capacity(t.names.len());
    let mut prev = 0u64;
    let mut text_ok = false;
    let mut name = Vec::with_capacity(64);
    for (i, &(start, len)) in t.names.iter().enumerate() {
        let a = addr(i).ok_or(KallsymsError::AddressesPastRodata)?;
        if a < prev {
            return Err(KallsymsError::Unsorted { entry: i });
        }
        prev = a;
        name.clear();
        for &tok in ro
            .get(start..start + len)
            .ok_or(KallsymsError::NamePastRodata)?
        {
            name.extend_from_slice(t.tokens.get(usize::from(tok)).copied().unwrap_or(&[]));
        }
        let Some((&kind, rest)) = name.split_first() else {
            return Err(KallsymsError::EmptyName { entry: i });
        };
        if rest == b"_text" {
            text_ok = a == text_addr;
        }
        b.push(rest, a, kind);
    }
    if !text_ok {
        return Err(KallsymsError::TextMismatch { text_addr });
    }
    Ok(b.finish())
}
