//! Reading records back: one per file (the results store) or one per line
//! (`KTSTR_RESULTS`), refusing other schemas by number.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::record::RunRecord;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file could not be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The text is not a run record (not JSON, or a field missing or of the
    /// wrong type).
    #[error("{}:{line}:{column}: not a run record: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the file where reading stopped, from 1.
        line: usize,
        /// The column on that line, from 1.
        column: usize,
        /// What was wrong there.
        reason: String,
    },
    /// A record of another schema than this crate's.
    #[error(
        "{}:{line}: a record of schema {found}, which this ktstr does not read (it reads schema \
         {expected})",
        path.display()
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// The line the record starts on, from 1.
        line: usize,
        /// The record's schema.
        found: u64,
        /// [`SCHEMA`](crate::SCHEMA).
        expected: u64,
    },
}

/// The part of a record read first: its schema decides how to read the rest.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: u64,
}

/// The record in `text`, which starts on line `line` of `path` (both only
/// name where a fault is). A record of another schema is refused with its
/// number before anything else of it is read.
pub fn parse(text: &str, path: &Path, line: usize) -> Result<RunRecord, RecordError> {
    let bad = |e: serde_json::Error| {
        let message = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        RecordError::Parse {
            path: path.to_path_buf(),
            line: line + e.line().saturating_sub(1),
            column: e.column(),
            reason: message.strip_suffix(&at).unwrap_or(&message).to_string(),
        }
    };
    let found = serde_json::from_str::<SchemaOnly>(text)
        .map_err(bad)?
        .schema;
    if found != crate::SCHEMA {
        return Err(RecordError::Schema {
            path: path.to_path_buf(),
            line,
            found,
            expected: crate::SCHEMA,
        });
    }
    serde_json::from_str(text).map_err(bad)
}

fn read_text(path: &Path) -> Result<String, RecordError> {
    std::fs::read_to_string(path).map_err(|e| RecordError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The one record of a file of the results store.
pub fn read_file(path: &Path) -> Result<RunRecord, RecordError> {
    parse(&read_text(path)?, path, 1)
}

/// Each record of a file of one record per line (`KTSTR_RESULTS`), in
/// order, or why that line could not be read; blank lines are skipped.
pub fn read_lines(path: &Path) -> Result<Vec<Result<RunRecord, RecordError>>, RecordError> {
    Ok(read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse(l, path, i + 1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    fn at() -> &'static Path {
        Path::new("runs/r1/steady.json")
    }

    #[test]
    fn another_schema_is_refused_with_its_number() {
        let e = parse(r#"{"schema": 999, "test": "x"}"#, at(), 3).expect_err("schema 999");
        assert!(
            matches!(
                e,
                RecordError::Schema {
                    found: 999,
                    expected: 1,
                    line: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "runs/r1/steady.json:3: a record of schema 999, which this ktstr does not read (it \
             reads schema 1)"
        );
    }

    #[test]
    fn unreadable_text_names_the_file_line_and_fault() {
        let e = parse("{\"schema\": 1,\n\"test\": 5}", at(), 10).expect_err("bad");
        let RecordError::Parse { line, reason, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*line, 11, "the fault is on the record's second line");
        assert!(reason.contains("expected a string"), "{reason}");
        assert!(e.to_string().starts_with("runs/r1/steady.json:11:"), "{e}");
        let e = parse("not json", at(), 1).expect_err("bad");
        assert!(e.to_string().contains("not a run record"), "{e}");
        let e = parse(r#"{"test": "x"}"#, at(), 1).expect_err("no schema");
        assert!(e.to_string().contains("missing field `schema`"), "{e}");
    }

    #[test]
    fn lines_are_read_one_record_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("results.jsonl");
        let good = serde_json::to_string(&RunRecord::new("k::a", Verdict::Fail)).expect("json");
        std::fs::write(&file, format!("{good}\n\n{{\"schema\": 2}}\n{good}\n")).expect("write");
        let read = read_lines(&file).expect("readable");
        assert_eq!(read.len(), 3);
        assert_eq!(
            read[0].as_ref().map(|r| r.verdict).ok(),
            Some(Verdict::Fail)
        );
        assert!(matches!(
            read[1],
            Err(RecordError::Schema {
                line: 3,
                found: 2,
                ..
            })
        ));
        assert!(read[2].is_ok());
        let gone = read_file(&dir.path().join("none.json")).expect_err("no file");
        assert!(matches!(gone, RecordError::Read { .. }), "{gone:?}");
    }
}
