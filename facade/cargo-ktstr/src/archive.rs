//! Portable runs: `cargo ktstr archive` packs the nextest archive of the
//! package's tests with the kernels their VMs boot, the cargo-nextest that
//! runs them and a manifest (ktstr version, kernel identities, test list,
//! a balanced split); `cargo ktstr run --archive` unpacks it on a machine
//! without the source or a Rust toolchain and runs one shard of it.
//!
//! The file is a tar stream compressed with zstd; its first member is the
//! manifest, so a version mismatch is found before anything is unpacked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::CmdError;
use crate::shard::{self, ArchiveManifest, PackedFile};

/// What is wrong in an archive that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// The file is not a zstd stream.
    #[error("not zstd: {0}")]
    NotZstd(ruzstd::decoding::errors::FrameDecoderError),
    /// The tar stream inside is cut or malformed.
    #[error("{0}")]
    Tar(std::io::Error),
    /// The stream holds no member.
    #[error("it is empty")]
    Empty,
    /// The first member is not the manifest.
    #[error("its first member is {name}, not {}", shard::ARCHIVE_MANIFEST)]
    FirstMember {
        /// The first member's path.
        name: String,
    },
    /// The manifest is not JSON of one.
    #[error("its manifest: {0}")]
    Manifest(serde_json::Error),
    /// A member's path leaves the directory it is unpacked in.
    #[error("a member's path leaves the archive")]
    PathLeaves,
    /// A file the manifest lists is not in the archive.
    #[error("{path} missing: {source}")]
    Missing {
        /// Its path inside.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A file whose bytes are not those the manifest hashed.
    #[error("{path}: SHA-256 {got}, the manifest says {want}")]
    Hash {
        /// Its path inside.
        path: String,
        /// Its hash.
        got: String,
        /// The manifest's.
        want: String,
    },
}

/// Why `file` cannot be read as an archive.
fn damaged(file: &Path, why: Damage) -> CmdError {
    CmdError::Damaged {
        file: file.to_path_buf(),
        why,
    }
}

/// The lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What goes into an archive besides its manifest: (path inside, file).
#[derive(Debug, Default)]
pub struct Contents {
    /// Files by their path inside the archive.
    pub files: Vec<(String, PathBuf)>,
}

impl Contents {
    /// Adds `file` at `inside`.
    pub fn add(&mut self, inside: impl Into<String>, file: impl Into<PathBuf>) {
        self.files.push((inside.into(), file.into()));
    }

    /// Adds every regular file below `dir` under `inside/`.
    pub fn add_dir(&mut self, inside: &str, dir: &Path) -> Result<(), CmdError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| CmdError::io(dir, e))?
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                self.add_dir(&format!("{inside}/{name}"), &p)?;
            } else if p.is_file() {
                self.add(format!("{inside}/{name}"), p);
            }
        }
        Ok(())
    }

    /// The manifest's file list: each file's hash.
    pub fn hashed(&self) -> Result<Vec<PackedFile>, CmdError> {
        self.files
            .iter()
            .map(|(inside, p)| {
                Ok(PackedFile {
                    path: inside.clone(),
                    sha256: sha256_file(p).map_err(|e| CmdError::io(p, e))?,
                })
            })
            .collect()
    }
}

/// Writes the archive: the manifest first, then `contents`.
pub fn write(out: &Path, manifest: &ArchiveManifest, contents: &Contents) -> Result<(), CmdError> {
    let err = |e: std::io::Error| CmdError::io(out, e);
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(err)?;
    // The tar stream goes through a pipe to the compressor thread.
    let (reader, writer) = std::io::pipe().map_err(err)?;
    let compressor = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(file);
        ruzstd::encoding::compress(
            std::io::BufReader::new(reader),
            &mut out,
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        out.flush()
    });
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    let text = serde_json::to_vec_pretty(manifest).map_err(|source| CmdError::Serialize {
        what: "the archive's manifest",
        source,
    })?;
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, shard::ARCHIVE_MANIFEST, text.as_slice())
        .map_err(err)?;
    for (inside, p) in &contents.files {
        tar.append_path_with_name(p, inside)
            .map_err(|e| CmdError::io(p, e))?;
    }
    tar.into_inner().map_err(err)?;
    compressor
        .join()
        .map_err(|_| CmdError::CompressorPanicked)?
        .map_err(err)?;
    std::fs::rename(&tmp, out).map_err(err)
}

/// Reads the manifest (the first member) and checks it was made by this
/// cargo-ktstr; then unpacks the rest into `dir` and checks every hash.
pub fn unpack(file: &Path, dir: &Path) -> Result<ArchiveManifest, CmdError> {
    let tar_err = |e| damaged(file, Damage::Tar(e));
    let f = std::fs::File::open(file).map_err(|e| CmdError::io(file, e))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f))
        .map_err(|e| damaged(file, Damage::NotZstd(e)))?;
    let mut tar = tar::Archive::new(decoder);
    let mut entries = tar.entries().map_err(tar_err)?;
    let mut first = entries
        .next()
        .ok_or_else(|| damaged(file, Damage::Empty))?
        .map_err(tar_err)?;
    let name = first
        .path()
        .map_err(tar_err)?
        .to_string_lossy()
        .into_owned();
    if name != shard::ARCHIVE_MANIFEST {
        return Err(damaged(file, Damage::FirstMember { name }));
    }
    let mut text = String::new();
    first.read_to_string(&mut text).map_err(tar_err)?;
    let manifest = check_manifest(file, &text)?;
    std::fs::create_dir_all(dir).map_err(|e| CmdError::io(dir, e))?;
    for e in entries {
        let mut e = e.map_err(tar_err)?;
        // unpack_in refuses paths that leave `dir`.
        let inside = e.unpack_in(dir).map_err(tar_err)?;
        if !inside {
            return Err(damaged(file, Damage::PathLeaves));
        }
    }
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let got = sha256_file(&p).map_err(|source| {
            damaged(
                file,
                Damage::Missing {
                    path: f.path.clone(),
                    source,
                },
            )
        })?;
        if got != f.sha256 {
            return Err(damaged(
                file,
                Damage::Hash {
                    path: f.path.clone(),
                    got,
                    want: f.sha256.clone(),
                },
            ));
        }
    }
    Ok(manifest)
}

/// The manifest in `text`, refused when of another format or version.
pub fn check_manifest(file: &Path, text: &str) -> Result<ArchiveManifest, CmdError> {
    #[derive(serde::Deserialize)]
    struct Head {
        format: u32,
        ktstr_version: String,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| damaged(file, Damage::Manifest(e)))?;
    if head.format != shard::FORMAT || head.ktstr_version != shard::KTSTR_VERSION {
        return Err(CmdError::OtherVersion {
            file: file.to_path_buf(),
            version: head.ktstr_version,
            format: head.format,
        });
    }
    serde_json::from_str(text).map_err(|e| damaged(file, Damage::Manifest(e)))
}

/// The object `field` of a nextest listing (`--message-format json`).
pub fn listing_object(
    listing: &str,
    field: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, CmdError> {
    let command = "nextest list";
    let mut v: serde_json::Value =
        serde_json::from_str(listing).map_err(|source| CmdError::NoJson { command, source })?;
    match v.get_mut(field).map(serde_json::Value::take) {
        Some(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(CmdError::MissingField { command, field }),
    }
}

/// The tests a nextest listing (`--message-format json`) says match, as
/// libtest names, sorted and deduplicated.
pub fn matching_tests(listing: &str) -> Result<Vec<String>, CmdError> {
    let suites = listing_object(listing, "rust-suites")?;
    let mut out = Vec::new();
    for suite in suites.values() {
        let Some(cases) = suite["testcases"].as_object() else {
            continue;
        };
        for (name, case) in cases {
            if case["filter-match"]["status"] == "matches" {
                out.push(name.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A nextest filterset naming exactly `tests`.
pub fn exact_filter(tests: &[String]) -> String {
    tests
        .iter()
        .map(|t| format!("test(={t})"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `cargo-nextest` in `PATH` (where `cargo nextest` finds it).
pub fn find_nextest() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("cargo-nextest"))
        .find(|p| p.is_file())
}

/// Runs `c`, its stdout returned; a failure says what ran.
pub fn output(mut c: Command) -> Result<String, CmdError> {
    let shown = format!("{c:?}");
    let out = c.output().map_err(|source| CmdError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(CmdError::CommandFailed {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel a packed kernel's files give `KTSTR_KERNEL`: its directory
/// (a cache entry's copy), or the one file in it.
pub fn kernel_path(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    match files.as_slice() {
        [one] if one.is_file() => one.clone(),
        _ => dir.to_path_buf(),
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
