//! `file:line` of a cached kernel's functions: a small index kept beside the
//! kernel (`lines.tsv`), built once at fetch time from the DWARF of Debian's
//! debug image (`linux-image-<release>-dbg`, feature `fetch`: `debuginfo`).
//! The stripped `vmlinux` that tests boot has no line information; BTF has
//! none for the kernel either. Reading the index needs no decompressor.
//!
//! Format: a header line `# ktstr line index v1 <release>`, then one
//! `function<TAB>file:line` per line, sorted by function. The location is
//! the line-table row at the function's entry address (the line of its
//! opening brace, or of its first statement), with the path relative to
//! the kernel's source tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::KernelError;

/// The index file in a cached kernel's directory.
pub const FILE: &str = "lines.tsv";
/// The first line of an index, before the release.
pub const HEADER: &str = "# ktstr line index v1";

/// Why a text is not a line index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineIndexError {
    /// The first line is not the index's header.
    #[error("not a line index (no `{HEADER}` header)")]
    NoHeader,
    /// A line is not `function<TAB>file:line`.
    #[error("line {line}: expected `function<TAB>file:line`")]
    BadLine {
        /// The line's number, from 1.
        line: usize,
    },
}

/// A kernel's function locations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    /// The release it was built for.
    pub release: String,
    by_func: BTreeMap<String, String>,
}

impl LineIndex {
    /// An index of `entries` (function, `file:line`) for `release`.
    pub fn new(release: &str, entries: impl IntoIterator<Item = (String, String)>) -> LineIndex {
        LineIndex {
            release: release.to_string(),
            by_func: entries.into_iter().collect(),
        }
    }

    /// The index beside the kernel in `kernel_dir`; `None` when there is none.
    /// A file that is not an index is an error naming it.
    pub fn load(kernel_dir: &Path) -> Result<Option<LineIndex>, KernelError> {
        let path = kernel_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KernelError::io(&path, e)),
        };
        LineIndex::parse(&text)
            .map(Some)
            .map_err(|why| KernelError::BadLineIndex { path, why })
    }

    /// Parses the text of an index.
    pub fn parse(text: &str) -> Result<LineIndex, LineIndexError> {
        let mut lines = text.lines();
        let release = lines
            .next()
            .and_then(|h| h.strip_prefix(HEADER))
            .map(str::trim)
            .ok_or(LineIndexError::NoHeader)?;
        let mut by_func = BTreeMap::new();
        for (n, l) in lines.enumerate() {
            let (f, loc) = l
                .split_once('\t')
                .filter(|(f, loc)| !f.is_empty() && loc.rsplit_once(':').is_some())
                .ok_or(LineIndexError::BadLine { line: n + 2 })?;
            by_func.insert(f.to_string(), loc.to_string());
        }
        Ok(LineIndex {
            release: release.to_string(),
            by_func,
        })
    }

    /// The index as text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER} {}\n", self.release);
        for (f, loc) in &self.by_func {
            out.push_str(f);
            out.push('\t');
            out.push_str(loc);
            out.push('\n');
        }
        out
    }

    /// Writes the index beside the kernel in `kernel_dir` (through a
    /// temporary file, so a half-written index is never read).
    pub fn store(&self, kernel_dir: &Path) -> Result<PathBuf, KernelError> {
        let path = kernel_dir.join(FILE);
        let tmp = kernel_dir.join(format!(".{FILE}.tmp"));
        std::fs::write(&tmp, self.to_text()).map_err(|e| KernelError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| KernelError::io(&path, e))?;
        Ok(path)
    }

    /// `file:line` of `func`.
    pub fn locate(&self, func: &str) -> Option<String> {
        self.by_func.get(func).cloned()
    }

    /// Every (function, `file:line`), sorted by function.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_func.iter().map(|(f, l)| (f.as_str(), l.as_str()))
    }

    /// Functions indexed.
    pub fn len(&self) -> usize {
        self.by_func.len()
    }

    /// Whether no function is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_func.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_and_answers_by_name() {
        let i = LineIndex::new(
            "7.3.4+deb13-cloud-amd64",
            [
                (
                    "enqueue_task_scx".to_string(),
                    "kernel/sched/ext.c:1410".to_string(),
                ),
                (
                    "scx_exit".to_string(),
                    "kernel/sched/ext.c:4870".to_string(),
                ),
            ],
        );
        let back = LineIndex::parse(&i.to_text()).expect("parses");
        assert_eq!(back, i);
        assert_eq!(
            back.locate("scx_exit").as_deref(),
            Some("kernel/sched/ext.c:4870")
        );
        assert_eq!(back.locate("nope"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(LineIndex::load(dir.path()).expect("no index is fine"), None);
        i.store(dir.path()).expect("store");
        assert_eq!(LineIndex::load(dir.path()).expect("load"), Some(i));
    }

    #[test]
    fn a_bad_index_is_an_error_not_a_wrong_line() {
        assert!(LineIndex::parse("").is_err());
        assert!(LineIndex::parse("hello\n").is_err());
        let e = LineIndex::parse(&format!("{HEADER} r\nfoo bar\n")).expect_err("no tab");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(LineIndex::parse(&format!("{HEADER} r\nfoo\tnoline\n")).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), "junk").expect("write");
        let e = LineIndex::load(dir.path()).expect_err("junk").to_string();
        assert!(e.contains(FILE), "{e}");
    }
}
