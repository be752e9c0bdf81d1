//! `.BTF.ext` of a BPF object: where each BPF function starts in its source,
//! from the object's function and line info (the records libbpf hands to
//! the kernel with the program). Auto-repro prints `file:line` of a
//! scheduler callback with it. Untrusted bytes: bounds-checked, no panics.

use alloc::vec::Vec;

use crate::btf::Btf;
use crate::error::BtfError;

/// `.BTF.ext` magic (`BTF_MAGIC`, include/uapi/linux/btf.h).
const MAGIC: u16 = 0xeb9f;

/// Where one BPF function starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncLine<'a> {
    /// The ELF section of the program (`struct_ops/ktstr_enqueue`).
    pub section: &'a str,
    /// The function's name.
    pub func: &'a str,
    /// Source file, as the compiler recorded it.
    pub file: &'a str,
    /// Line of the function's first instruction.
    pub line: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// One block of an info section: section name offset, records' bytes, record size.
type Block<'a> = (u32, &'a [u8], usize);

/// The blocks of one info section.
fn info_blocks(sec: &[u8]) -> Result<Vec<Block<'_>>, BtfError> {
    let bad = BtfError::Layout(".BTF.ext info section is malformed");
    let mut out = Vec::new();
    if sec.is_empty() {
        return Ok(out);
    }
    let rec = u32_at(sec, 0).ok_or(bad.clone())? as usize;
    if rec < 8 {
        return Err(bad);
    }
    let mut at = 4usize;
    while at < sec.len() {
        let name = u32_at(sec, at).ok_or(bad.clone())?;
        let n = u32_at(sec, at + 4).ok_or(bad.clone())? as usize;
        at += 8;
        let len = n.checked_mul(rec).ok_or(bad.clone())?;
        let end = at.checked_add(len).ok_or(bad.clone())?;
        let recs = sec.get(at..end).ok_or(bad.clone())?;
        out.push((name, recs, rec));
        at = end;
    }
    Ok(out)
}

/// Where each function of the object starts: `btf` is the object's `.BTF`,
/// `ext` its `.BTF.ext`.
pub fn func_lines<'a>(btf: &Btf<'a>, ext: &'a [u8]) -> Result<Vec<FuncLine<'a>>, BtfError> {
    let magic = ext.get(..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
    if magic != Some(MAGIC) {
        return Err(BtfError::Layout(".BTF.ext has no BTF magic"));
    }
    let hdr_len = u32_at(ext, 4).ok_or(BtfError::Layout(".BTF.ext header is cut"))? as usize;
    let field = |i: usize| u32_at(ext, 8 + 4 * i).ok_or(BtfError::Layout(".BTF.ext header is cut"));
    let (fi_off, fi_len, li_off, li_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let body = ext
        .get(hdr_len..)
        .ok_or(BtfError::Layout(".BTF.ext header is cut"))?;
    let part = |off: u32, len: u32| {
        let (off, len) = (off as usize, len as usize);
        body.get(off..off.checked_add(len)?)
            .ok_or(BtfError::Layout(".BTF.ext section out of bounds"))
            .ok()
    };
    let funcs = part(fi_off, fi_len).ok_or(BtfError::Layout(".BTF.ext func info out of bounds"))?;
    let lines = part(li_off, li_len).ok_or(BtfError::Layout(".BTF.ext line info out of bounds"))?;
    let line_blocks = info_blocks(lines)?;
    let mut out = Vec::new();
    for (sec_off, recs, size) in info_blocks(funcs)? {
        let section = btf.string_at(sec_off);
        for r in recs.chunks_exact(size) {
            let (Some(insn), Some(ty)) = (u32_at(r, 0), u32_at(r, 4)) else {
                continue;
            };
            let Ok(t) = btf.ty(crate::TypeId(ty)) else {
                continue;
            };
            // The first line record of the same section at the same instruction.
            let found = line_blocks
                .iter()
                .filter(|(s, _, _)| btf.string_at(*s) == section)
                .flat_map(|(_, recs, size)| recs.chunks_exact(*size))
                .find(|l| u32_at(l, 0) == Some(insn));
            if let Some(l) = found {
                let file = btf.string_at(u32_at(l, 4).unwrap_or(0));
                let line = u32_at(l, 12).unwrap_or(0) >> 10;
                out.push(FuncLine {
                    section,
                    func: t.name(),
                    file,
                    line,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests state their expectations with unwrap.
    use super::*;
    use crate::builder::BtfBuilder;

    fn ext(funcs: &[(u32, u32, u32)], lines: &[(u32, u32, u32, u32, u32)]) -> Vec<u8> {
        let mut fi = 8u32.to_le_bytes().to_vec();
        for &(sec, insn, ty) in funcs {
            for v in [sec, 1, insn, ty] {
                fi.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut li = 16u32.to_le_bytes().to_vec();
        for &(sec, insn, file, line, col) in lines {
            for v in [sec, 1, insn, file, 0, (line << 10) | col] {
                li.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, fi.len() as u32, fi.len() as u32, li.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&fi);
        out.extend_from_slice(&li);
        out
    }

    #[test]
    fn a_function_start_line_is_found() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4, true);
        let proto = b.func_proto(int, &[]);
        let f = b.func("ktstr_enqueue", proto, 1);
        let sec = b.add_str("struct_ops/ktstr_enqueue");
        let file = b.add_str("ktstr.bpf.c");
        let data = b.finish();
        let btf = Btf::parse(&data).unwrap();
        let e = ext(
            &[(sec, 0, f.0)],
            &[(sec, 0, file, 121, 5), (sec, 8, file, 130, 2)],
        );
        let got = func_lines(&btf, &e).unwrap();
        assert_eq!(
            got,
            [FuncLine {
                section: "struct_ops/ktstr_enqueue",
                func: "ktstr_enqueue",
                file: "ktstr.bpf.c",
                line: 121
            }]
        );
    }

    #[test]
    fn cut_or_garbage_ext_is_an_error_not_a_panic() {
        let data = BtfBuilder::new().finish();
        let btf = Btf::parse(&data).unwrap();
        let good = ext(&[(1, 0, 1)], &[(1, 0, 1, 1, 1)]);
        for n in 0..good.len() {
            let _ = func_lines(&btf, &good[..n]);
        }
        assert!(func_lines(&btf, b"\0\0\0\0").is_err());
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(func_lines(&btf, &bad).is_err());
    }
}
