//! The kernel's `file:line` index ([`crate::lines`]) from Debian's debug
//! image: `linux-image-<release>-dbg` holds the unstripped `vmlinux` (its
//! `.symtab` and DWARF). The fetch downloads the package once per kernel,
//! takes only that file out of it, keeps the line of each function's entry
//! address, and deletes the rest: the index is a few MB, the package
//! hundreds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::KernelError;
use crate::debian::PrivateApt;
use crate::lines::LineIndex;

/// The Debian package with the debug image of `release`.
pub fn package_name(release: &str) -> String {
    format!("linux-image-{release}-dbg")
}

/// The unstripped vmlinux's path inside that package.
fn member(release: &str) -> String {
    format!("./usr/lib/debug/lib/modules/{release}/vmlinux")
}

/// The line index of an unstripped `vmlinux` (`elf`): for every function
/// symbol whose name is unique, the line-table row at its entry address.
/// Functions without such a row (assembly, generated code) and names that
/// several functions share are left out: no line beats a wrong one.
pub fn index_of(release: &str, elf: &[u8]) -> Result<LineIndex, KernelError> {
    let corrupt = |why: String| KernelError::Corrupt {
        what: format!("the debug vmlinux of {release}: {why}"),
    };
    let file = object::File::parse(elf).map_err(|e| corrupt(e.to_string()))?;
    // Entry address -> function name, for names used once.
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut starts: HashMap<u64, &str> = HashMap::new();
    for s in file.symbols() {
        if s.kind() != SymbolKind::Text || s.size() == 0 {
            continue;
        }
        let Ok(name) = s.name() else { continue };
        *seen.entry(name).or_default() += 1;
        starts.insert(s.address(), name);
    }
    starts.retain(|_, n| seen.get(n) == Some(&1));
    if starts.is_empty() {
        return Err(corrupt("no function symbols (.symtab)".into()));
    }
    let endian = gimli::RunTimeEndian::Little;
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(std::borrow::Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).map_err(|e| corrupt(e.to_string()))?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));
    let mut found: HashMap<&str, String> = HashMap::new();
    let mut units = dwarf.units();
    let dwarf_err = |e: gimli::Error| corrupt(format!("DWARF: {e}"));
    while let Some(header) = units.next().map_err(dwarf_err)? {
        let unit = dwarf.unit(header).map_err(dwarf_err)?;
        let Some(program) = unit.line_program.clone() else {
            continue;
        };
        let comp_dir = unit
            .comp_dir
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rows = program.rows();
        while let Some((lh, row)) = rows.next_row().map_err(dwarf_err)? {
            if row.end_sequence() {
                continue;
            }
            let Some(name) = starts.get(&row.address()) else {
                continue;
            };
            if found.contains_key(name) {
                continue;
            }
            let (Some(line), Some(entry)) = (row.line(), row.file(lh)) else {
                continue;
            };
            let text = |v| {
                dwarf
                    .attr_string(&unit, v)
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok()
            };
            let Some(base) = text(entry.path_name()) else {
                continue;
            };
            let dir = entry.directory(lh).and_then(text).unwrap_or_default();
            found.insert(
                name,
                format!("{}:{line}", source_path(&comp_dir, &dir, &base)),
            );
        }
    }
    Ok(LineIndex::new(
        release,
        found.into_iter().map(|(n, l)| (n.to_string(), l)),
    ))
}

/// A line-table file as a path in the kernel's source tree: joined with its
/// directory and the compilation directory, then made relative to the
/// latter (`kernel/sched/ext.c`; a header outside the tree stays absolute).
pub fn source_path(comp_dir: &str, dir: &str, name: &str) -> String {
    let mut p = PathBuf::new();
    if !Path::new(name).is_absolute() {
        if !Path::new(dir).is_absolute() {
            p.push(comp_dir);
        }
        p.push(dir);
    }
    p.push(name);
    // Lexically drop `.` and `..` (the tree has no symlinks that matter here).
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            c => clean.push(c),
        }
    }
    match clean.strip_prefix(comp_dir) {
        Ok(rel) if !comp_dir.is_empty() => rel.display().to_string(),
        _ => clean.display().to_string(),
    }
}

/// Takes the unstripped vmlinux of `release` out of the downloaded package
/// `deb` into `dest` (only that file: the package unpacks to ~2 GB).
fn extract_vmlinux(deb: &Path, release: &str, dest: &Path) -> Result<(), KernelError> {
    let what = format!("dpkg-deb --fsys-tarfile {} | tar -xO", deb.display());
    let cmd_err = |detail: String| KernelError::Command {
        command: what.clone(),
        detail,
    };
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| cmd_err(format!("cannot run dpkg-deb ({e})")))?;
    let out = std::fs::File::create(dest).map_err(|e| KernelError::io(dest, e))?;
    let tar = Command::new("tar")
        .arg("-xO")
        .arg(member(release))
        .stdin(dpkg.stdout.take().map_or(Stdio::null(), Stdio::from))
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| cmd_err(format!("cannot run tar ({e})")))?;
    let dpkg_status = dpkg.wait().map_err(|e| cmd_err(e.to_string()))?;
    if !tar.status.success() || !dpkg_status.success() {
        return Err(cmd_err(format!(
            "{} (looking for {})",
            String::from_utf8_lossy(&tar.stderr).trim(),
            member(release)
        )));
    }
    Ok(())
}

/// Keeps the line index of the kernel cached in `kernel_dir` beside it,
/// building it from `linux-image-<release>-dbg` (downloaded into `scratch`)
/// unless it is there already. Returns whether it is there afterwards:
/// `false` when the package lists have no such package.
pub(crate) fn keep_line_index(
    apt: &PrivateApt,
    release: &str,
    kernel_dir: &Path,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<bool, KernelError> {
    if LineIndex::load(kernel_dir).is_ok_and(|i| i.is_some()) {
        return Ok(true);
    }
    let package = package_name(release);
    if !apt.has_package(&package) {
        progress(&format!(
            "{package} is not in the package lists: probes show kernel functions without file:line"
        ));
        return Ok(false);
    }
    progress(&format!(
        "downloading {package} for the file:line of kernel functions (once per kernel)"
    ));
    let t0 = std::time::Instant::now();
    let deb = apt.download(&package, scratch)?;
    let downloaded = t0.elapsed();
    let vmlinux = scratch.join("vmlinux.dbg");
    extract_vmlinux(&deb, release, &vmlinux)?;
    std::fs::remove_file(&deb).map_err(|e| KernelError::io(&deb, e))?;
    let extracted = t0.elapsed();
    let elf = std::fs::read(&vmlinux).map_err(|e| KernelError::io(&vmlinux, e))?;
    let index = index_of(release, &elf)?;
    drop(elf);
    std::fs::remove_file(&vmlinux).map_err(|e| KernelError::io(&vmlinux, e))?;
    let path = index.store(kernel_dir)?;
    progress(&format!(
        "indexed {} kernel functions into {} (download {:.1}s, extract {:.1}s, index {:.1}s)",
        index.len(),
        path.display(),
        downloaded.as_secs_f64(),
        (extracted - downloaded).as_secs_f64(),
        (t0.elapsed() - extracted).as_secs_f64()
    ));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_table_paths_become_tree_relative() {
        let cd = "/build/linux-7.3.4";
        assert_eq!(
            source_path(cd, cd, "kernel/sched/ext.c"),
            "kernel/sched/ext.c"
        );
        assert_eq!(
            source_path(cd, "kernel/sched", "ext.c"),
            "kernel/sched/ext.c"
        );
        assert_eq!(
            source_path(cd, "./include/linux", "../linux/sched.h"),
            "include/linux/sched.h"
        );
        assert_eq!(
            source_path(cd, "/usr/lib/gcc/x86_64-linux-gnu/14/include", "stddef.h"),
            "/usr/lib/gcc/x86_64-linux-gnu/14/include/stddef.h"
        );
        assert_eq!(source_path(cd, "x", "/abs/file.c"), "/abs/file.c");
    }

    /// A function at a known line of this file, in this test binary.
    #[inline(never)]
    fn a_marker_function_for_the_index() -> u32 {
        std::hint::black_box(7)
    }
    const MARKER_LINE: u32 = line!() - 3;

    /// The oracle is the compiler: this test binary's own DWARF puts the
    /// marker function at the line of its `fn`.
    #[test]
    fn this_binary_indexes_its_own_function_at_its_line() {
        assert_eq!(a_marker_function_for_the_index(), 7);
        let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        let index = index_of("self", &exe).expect("the test binary has line tables");
        let found: Vec<(&str, &str)> = index
            .iter()
            .filter(|(n, _)| n.contains("a_marker_function_for_the_index"))
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let want = format!("{}:{MARKER_LINE}", file!());
        assert!(
            found[0].1.ends_with(&want),
            "{} is not at {want}",
            found[0].1
        );
    }

    #[test]
    fn a_file_without_symbols_or_not_elf_is_an_error() {
        assert!(index_of("r", b"not an elf").is_err());
    }
}
