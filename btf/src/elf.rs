//! Pull the `.BTF` section out of an ELF file (a `vmlinux`, a module, a BPF object).

use alloc::string::ToString;

use object::{Object, ObjectSection};

use crate::error::BtfError;

/// The bytes of the `.BTF` section of the ELF image `elf`, borrowed from it.
///
/// ```no_run
/// let elf = std::fs::read("vmlinux")?;
/// let btf = ktstr_btf::Btf::parse(ktstr_btf::elf::btf_section(&elf)?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn btf_section(elf: &[u8]) -> Result<&[u8], BtfError> {
    let file = object::File::parse(elf).map_err(|e| BtfError::Elf(e.to_string()))?;
    let section = file
        .section_by_name(".BTF")
        .ok_or_else(|| BtfError::Elf("the file has no .BTF section".to_string()))?;
    section.data().map_err(|e| BtfError::Elf(e.to_string()))
}
