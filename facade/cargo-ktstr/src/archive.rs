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

use crate::shard::{self, ArchiveManifest, PackedFile};

/// Why an archive cannot be read.
pub fn damaged(file: &Path, why: impl std::fmt::Display) -> String {
    format!(
        "{}: damaged or not a ktstr archive ({why}); copy it again, or make it again with \
         `cargo ktstr archive`",
        file.display()
    )
}

/// The lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
    pub fn add_dir(&mut self, inside: &str, dir: &Path) -> Result<(), String> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
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
    pub fn hashed(&self) -> Result<Vec<PackedFile>, String> {
        self.files
            .iter()
            .map(|(inside, p)| {
                Ok(PackedFile {
                    path: inside.clone(),
                    sha256: sha256_file(p)?,
                })
            })
            .collect()
    }
}

/// Writes the archive: the manifest first, then `contents`.
pub fn write(out: &Path, manifest: &ArchiveManifest, contents: &Contents) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", out.display());
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
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, shard::ARCHIVE_MANIFEST, text.as_slice())
        .map_err(err)?;
    for (inside, p) in &contents.files {
        tar.append_path_with_name(p, inside)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    tar.into_inner().map_err(err)?;
    compressor
        .join()
        .map_err(|_| "the compressor thread panicked".to_string())?
        .map_err(err)?;
    std::fs::rename(&tmp, out).map_err(err)
}

/// Reads the manifest (the first member) and checks it was made by this
/// cargo-ktstr; then unpacks the rest into `dir` and checks every hash.
pub fn unpack(file: &Path, dir: &Path) -> Result<ArchiveManifest, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f))
        .map_err(|e| damaged(file, format!("not zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let mut entries = tar.entries().map_err(|e| damaged(file, e))?;
    let mut first = entries
        .next()
        .ok_or_else(|| damaged(file, "it is empty"))?
        .map_err(|e| damaged(file, e))?;
    let name = first
        .path()
        .map_err(|e| damaged(file, e))?
        .to_string_lossy()
        .into_owned();
    if name != shard::ARCHIVE_MANIFEST {
        return Err(damaged(
            file,
            format!(
                "its first member is {name}, not {}",
                shard::ARCHIVE_MANIFEST
            ),
        ));
    }
    let mut text = String::new();
    first
        .read_to_string(&mut text)
        .map_err(|e| damaged(file, e))?;
    let manifest = check_manifest(file, &text)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let mut e = e.map_err(|e| damaged(file, e))?;
        // unpack_in refuses paths that leave `dir`.
        let inside = e.unpack_in(dir).map_err(|e| damaged(file, e))?;
        if !inside {
            return Err(damaged(file, "a member's path leaves the archive"));
        }
    }
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let got = sha256_file(&p).map_err(|e| damaged(file, format!("{} missing: {e}", f.path)))?;
        if got != f.sha256 {
            return Err(damaged(
                file,
                format!("{}: SHA-256 {got}, the manifest says {}", f.path, f.sha256),
            ));
        }
    }
    Ok(manifest)
}

/// The manifest in `text`, refused when of another format or version.
pub fn check_manifest(file: &Path, text: &str) -> Result<ArchiveManifest, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        format: u32,
        ktstr_version: String,
    }
    let head: Head =
        serde_json::from_str(text).map_err(|e| damaged(file, format!("its manifest: {e}")))?;
    if head.format != shard::FORMAT || head.ktstr_version != shard::KTSTR_VERSION {
        return Err(format!(
            "{}: made by cargo-ktstr {v} (archive format {}), this is cargo-ktstr {} (format {}): \
             run it with cargo-ktstr {v}, or make the archive again with this one",
            file.display(),
            head.format,
            shard::KTSTR_VERSION,
            shard::FORMAT,
            v = head.ktstr_version,
        ));
    }
    serde_json::from_str(text).map_err(|e| damaged(file, format!("its manifest: {e}")))
}

/// The tests a nextest listing (`--message-format json`) says match, as
/// libtest names, sorted and deduplicated.
pub fn matching_tests(listing: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(listing)
        .map_err(|e| format!("nextest list printed no JSON listing: {e}"))?;
    let suites = v["rust-suites"]
        .as_object()
        .ok_or("nextest's listing has no rust-suites")?;
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
pub fn output(mut c: Command) -> Result<String, String> {
    let shown = format!("{c:?}");
    let out = c.output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
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
