//! What the dynamic loader reads from an ELF file: its interpreter and its
//! dynamic section (`DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`, `DT_SONAME`).
//!
//! Only the headers, the dynamic segment and its string table are read, through
//! `object`'s `ReadCache`, so a 50 MB test binary costs a few small reads.

use std::fs::File;
use std::path::Path;

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, FileKind};

use crate::error::{ElfError, InitramfsError, Result, io};

/// The loader-relevant facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// `(EI_CLASS, EI_DATA, e_machine)`: a library must match its user's.
    pub abi: (u8, u8, u16),
    /// `PT_INTERP`, when the file has one.
    pub interp: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH`, colon-separated, when present.
    pub rpath: Option<String>,
    /// `DT_RUNPATH`, colon-separated, when present.
    pub runpath: Option<String>,
    /// `DT_SONAME`, when present.
    pub soname: Option<String>,
}

impl ElfInfo {
    /// Read the facts from the file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io(path, "open"))?;
        let cache = ReadCache::new(file);
        let bad = |source: ElfError| InitramfsError::Elf {
            path: path.to_owned(),
            source,
        };
        match FileKind::parse(&cache) {
            Ok(FileKind::Elf32) => parse::<elf::FileHeader32<Endianness>, _>(&cache).map_err(bad),
            Ok(FileKind::Elf64) => parse::<elf::FileHeader64<Endianness>, _>(&cache).map_err(bad),
            Ok(kind) => Err(bad(ElfError::NotElf(kind))),
            Err(e) => Err(bad(ElfError::Parse(e))),
        }
    }
}

fn text(bytes: &[u8]) -> std::result::Result<String, ElfError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ElfError::NotUtf8)
}

fn parse<'data, Elf, R>(data: R) -> std::result::Result<ElfInfo, ElfError>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let err = ElfError::Parse;
    let header = Elf::parse(data).map_err(err)?;
    let endian = header.endian().map_err(err)?;
    let ident = header.e_ident();
    let mut info = ElfInfo {
        abi: (ident.class, ident.data, header.e_machine(endian)),
        ..ElfInfo::default()
    };
    let phdrs = header.program_headers(endian, data).map_err(err)?;
    let mut dynamic = None;
    for ph in phdrs {
        if let Some(interp) = ph.interpreter(endian, data).map_err(err)? {
            info.interp = Some(text(interp)?);
        }
        if let Some(d) = ph.dynamic(endian, data).map_err(err)? {
            dynamic = Some(d);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(info);
    };
    let (mut strtab, mut strsz) = (None, None);
    for d in dynamic {
        let tag: u64 = d.d_tag(endian).into();
        let val: u64 = d.d_val(endian).into();
        match tag as u32 {
            _ if tag == u64::from(elf::DT_NULL) => break,
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = Some(val),
            _ => {}
        }
    }
    let (Some(addr), Some(size)) = (strtab, strsz) else {
        return Err(ElfError::NoStringTable);
    };
    // DT_STRTAB is a virtual address: find the loadable segment that holds it.
    let strings = phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find_map(|ph| ph.data_range(endian, data, addr, size).ok().flatten())
        .ok_or(ElfError::StringTableOutside)?;
    let string = |off: u64| -> std::result::Result<String, ElfError> {
        let tail = usize::try_from(off)
            .ok()
            .and_then(|o| strings.get(o..))
            .ok_or(ElfError::StringOutOfRange)?;
        let len = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or(ElfError::NotTerminated)?;
        text(&tail[..len])
    };
    for d in dynamic {
        let tag: u64 = d.d_tag(endian).into();
        let val: u64 = d.d_val(endian).into();
        if tag == u64::from(elf::DT_NULL) {
            break;
        }
        match u32::try_from(tag) {
            Ok(elf::DT_NEEDED) => info.needed.push(string(val)?),
            Ok(elf::DT_RPATH) => info.rpath = Some(string(val)?),
            Ok(elf::DT_RUNPATH) => info.runpath = Some(string(val)?),
            Ok(elf::DT_SONAME) => info.soname = Some(string(val)?),
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bin_ls() {
        let info = ElfInfo::read(Path::new("/bin/ls")).expect("/bin/ls is ELF");
        assert!(
            info.interp
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{info:?}"
        );
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{info:?}"
        );
        assert!(
            info.needed.iter().any(|n| n.starts_with("libselinux.so")),
            "{info:?}"
        );
    }

    #[test]
    fn reads_libc_soname() {
        let info =
            ElfInfo::read(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).expect("libc is ELF");
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert_eq!(
            info.abi,
            (elf::ELFCLASS64, elf::ELFDATA2LSB, elf::EM_X86_64)
        );
    }

    #[test]
    fn non_elf_is_an_error_naming_the_file() {
        let err = ElfInfo::read(Path::new("/etc/passwd")).expect_err("not ELF");
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}
