//! One-shot packing, for `cargo xtask initramfs --bin PATH... -o OUT`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::cache::BaseSpec;
use crate::closure::{ClosureFile, LoaderConfig, closure, merge};
use crate::error::{InitramfsError, Result, io};

/// What [`pack_binaries`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// Every file packed (binaries, interpreters, libraries), sorted by guest path.
    pub files: Vec<ClosureFile>,
    /// Bytes written to the output.
    pub bytes: u64,
}

/// Pack each binary at `/bin/<file name>` with its shared-library closure
/// (libraries at the paths the loader opens) into the cpio archive `out`.
/// The output is written through a temporary file next to `out` and renamed.
pub fn pack_binaries(binaries: &[PathBuf], out: &Path) -> Result<PackReport> {
    let mut spec = BaseSpec::new();
    for bin in binaries {
        let name = bin.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            InitramfsError::InvalidPath {
                path: bin.display().to_string(),
                reason: "a binary path must end in a UTF-8 file name",
            }
        })?;
        spec = spec.binary(bin, &format!("/bin/{name}"));
    }
    let archive = spec.archive()?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(io(&tmp, "create"))?);
        let n = archive.write_to(&mut w)?;
        w.flush().map_err(io(&tmp, "write"))?;
        std::fs::rename(&tmp, out).map_err(io(out, "rename"))?;
        Ok(n)
    })();
    let bytes = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    let closures = spec
        .binaries
        .iter()
        .map(|(h, g)| closure(h, g, &LoaderConfig::default()))
        .collect::<Result<Vec<_>>>()?;
    let mut files = merge(&closures)?;
    files.sort();
    Ok(PackReport { files, bytes })
}
