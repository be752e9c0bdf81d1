//! Which kfuncs a scheduler cannot call on a kernel: the BPF objects a
//! scheduler binary embeds (libbpf skeletons keep them in the binary as
//! whole ELF files) name the kernel functions they call as undefined
//! symbols typed `FUNC` in their own BTF; each one the kernel's BTF does not
//! have, or has with another number of arguments, and that the object does
//! not declare weak, stops the load. Said beside a start-up death, it turns
//! "Invalid argument" into a reason.

use object::{Object, ObjectSection, ObjectSymbol};

/// `EM_BPF` (`include/uapi/linux/elf-em.h`).
const EM_BPF: u16 = 247;
/// At most this many embedded objects are looked at (a binary has a few).
const MAX_OBJECTS: usize = 64;

/// The non-weak kfuncs `scheduler` (a binary's bytes) calls that the kernel
/// BTF `kernel` lacks (`name`), or has with another number of arguments
/// (`name (N arguments here, M in the kernel)`), sorted, without repeats.
pub(crate) fn missing(scheduler: &[u8], kernel: &ktstr_btf::Btf<'_>) -> Vec<String> {
    let mut out: Vec<String> = embedded_bpf_objects(scheduler)
        .into_iter()
        .flat_map(called_kfuncs)
        .filter_map(|(name, args)| match arity(kernel, &name) {
            None => Some(name),
            Some(k) if args.is_some_and(|a| a != k) => Some(format!(
                "{name} ({} arguments here, {k} in the kernel)",
                args.unwrap_or_default()
            )),
            Some(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The number of arguments of function `name` in `btf`; `None` when it has none so named.
fn arity(btf: &ktstr_btf::Btf<'_>, name: &str) -> Option<u16> {
    let func = btf.ty(btf.find_kind(name, ktstr_btf::Kind::Func)?).ok()?;
    let proto = btf.ty(func.referenced()?).ok()?;
    Some(proto.vlen())
}

/// The BPF ELF objects inside `bytes`: every `\x7fELF` header of a 64-bit
/// little-endian `EM_BPF` file, each from its start to the end of `bytes`
/// (an ELF's own offsets say where its parts end).
fn embedded_bpf_objects(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < MAX_OBJECTS {
        let Some(rel) = bytes
            .get(at..)
            .and_then(|rest| rest.windows(4).position(|w| w == b"\x7fELF"))
        else {
            break;
        };
        let start = at + rel;
        let hdr = &bytes[start..];
        let machine = hdr.get(18..20).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if hdr.get(4) == Some(&2) && hdr.get(5) == Some(&1) && machine == Some(EM_BPF) {
            out.push(hdr);
        }
        at = start + 4;
    }
    out
}

/// The bytes of the ELF file starting at `obj`, up to the end of its
/// section header table (`e_shoff + e_shnum * e_shentsize`, ELF64 offsets
/// 0x28, 0x3c, 0x3a), copied to 8-byte-aligned memory as the ELF reader
/// needs; `None` when the header is cut short.
fn aligned_object(obj: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let u16_at = |at: usize| {
        obj.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let shoff = obj
        .get(0x28..0x30)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))?;
    let end = usize::try_from(shoff)
        .ok()?
        .checked_add(usize::from(u16_at(0x3c)?) * usize::from(u16_at(0x3a)?))?;
    let src = obj.get(..end)?;
    let mut buf = vec![0u8; end + 8];
    let off = buf.as_ptr().align_offset(8);
    buf.get_mut(off..off + end)?.copy_from_slice(src);
    Some((buf, off, end))
}

/// The kfuncs one BPF object calls and does not declare weak: undefined
/// symbols its `.BTF` types as functions (kconfig and ksym variables are
/// `VAR`s, not `FUNC`s). An object that does not parse gives none.
fn called_kfuncs(obj: &[u8]) -> Vec<(String, Option<u16>)> {
    let Some((buf, off, len)) = aligned_object(obj) else {
        return Vec::new();
    };
    let Ok(elf) = object::File::parse(&buf[off..off + len]) else {
        return Vec::new();
    };
    let Some(btf) = elf
        .section_by_name(".BTF")
        .and_then(|s| s.data().ok())
        .and_then(|d| ktstr_btf::Btf::parse(d).ok())
    else {
        return Vec::new();
    };
    elf.symbols()
        .filter(|s| s.is_undefined() && !s.is_weak())
        .filter_map(|s| s.name().ok())
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            btf.find_kind(n, ktstr_btf::Kind::Func)?;
            Some((n.to_string(), arity(&btf, n)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bpf_elves_by_header_only() {
        let mut bin = b"padding \x7fELF\x02\x01 not bpf".to_vec();
        let mut bpf = vec![0u8; 64];
        bpf[..4].copy_from_slice(b"\x7fELF");
        bpf[4] = 2;
        bpf[5] = 1;
        bpf[18..20].copy_from_slice(&EM_BPF.to_le_bytes());
        let at = bin.len();
        bin.extend_from_slice(&bpf);
        let found = embedded_bpf_objects(&bin);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].as_ptr(), bin[at..].as_ptr());
        // Garbage in the object parses to nothing, and says nothing.
        assert!(called_kfuncs(found[0]).is_empty());
        assert!(embedded_bpf_objects(b"\x7fEL").is_empty());
        // A section header table said to lie past the end: no object.
        let mut cut = bpf.clone();
        cut[0x28..0x30].copy_from_slice(&4096u64.to_le_bytes());
        cut[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        cut[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        assert!(aligned_object(&cut).is_none());
    }
}
