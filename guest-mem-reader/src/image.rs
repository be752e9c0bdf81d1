//! The kernel image file: its `.BTF` section, read without loading the whole (60+ MB) ELF.

use std::path::Path;

use object::{Object, ObjectSection};

use crate::error::{Error, Result};

/// The `.BTF` section of the ELF vmlinux at `path` (only the headers and that section are
/// read). A kernel built without `CONFIG_DEBUG_INFO_BTF` is an error that says so.
///
/// ```no_run
/// let bytes = ktstr_guest_mem::image::read_btf("vmlinux".as_ref())?;
/// let btf = ktstr_btf::Btf::parse(&bytes)?;
/// # Ok::<(), ktstr_guest_mem::Error>(())
/// ```
pub fn read_btf(path: &Path) -> Result<Vec<u8>> {
    let image = image_error(path);
    let cache = open(path)?;
    let elf = object::File::parse(&cache).map_err(|e| image(format!("not an ELF file: {e}")))?;
    let sec = elf.section_by_name(".BTF").ok_or_else(|| {
        image("it has no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF)".into())
    })?;
    let data = sec
        .data()
        .map_err(|e| image(format!("reading .BTF: {e}")))?;
    Ok(data.to_vec())
}

/// The image at `path`, opened for reads of only what a parse asks for.
fn open(path: &Path) -> Result<object::ReadCache<std::io::BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(object::ReadCache::new(std::io::BufReader::new(file)))
}

/// An error about the image at `path`, saying `what`.
fn image_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |what| Error::Image {
        path: path.to_owned(),
        what,
    }
}

/// `len` bytes of the image at link-time virtual address `va`, as the ELF's loadable segments
/// hold them (only the headers and those bytes are read). An address outside every segment's
/// file bytes is an error naming it.
pub fn read_at(path: &Path, va: u64, len: usize) -> Result<Vec<u8>> {
    use object::ObjectSegment;
    let image = image_error(path);
    let cache = open(path)?;
    let elf = object::File::parse(&cache).map_err(|e| image(format!("not an ELF file: {e}")))?;
    for seg in elf.segments() {
        let (off, size) = seg.file_range();
        let Some(rel) = va.checked_sub(seg.address()) else {
            continue;
        };
        if rel.saturating_add(len as u64) > size {
            continue;
        }
        let data = seg
            .data_range(seg.address() + rel, len as u64)
            .map_err(|e| {
                image(format!(
                    "reading {len} bytes at {va:#x} (file offset {:#x}): {e}",
                    off + rel
                ))
            })?;
        if let Some(d) = data {
            return Ok(d.to_vec());
        }
    }
    Err(image(format!(
        "no loadable segment holds {len} bytes at {va:#x}"
    )))
}
