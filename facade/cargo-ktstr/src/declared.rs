//! The schedulers an archive's tests declare, packed so that they are found on a machine
//! without the source: each test binary lists its tests' declared schedulers, resolved on
//! this host (`KTSTR_LIST_SCHEDULERS`), and each becomes a file of the archive:
//!
//! | declared | packed at | found on the shard by |
//! |---|---|---|
//! | `Discover(name)`, a `[[bin]]` of the workspace | nextest's own archive | nextest's target directory |
//! | `Discover(name)` found on `PATH` | `sched-bin/<name>` | `PATH`, which the shard run puts it first on |
//! | `Path("/abs/bin")` | `paths/abs/bin` | `KTSTR_ARCHIVE_ROOT=<unpacked>/paths` |
//! | `Installed(name)` | `cache/schedulers/bin/<name>` | the shard's ktstr cache |
//! | `files = [("/host/f", ..)]` | `paths/host/f` | `KTSTR_ARCHIVE_ROOT` |

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr::test_support::{DeclaredScheduler, LIST_SCHEDULERS_ENV};

use crate::error::CmdError;

/// Where declared host paths go inside the archive.
pub const PATHS_DIR: &str = "paths";
/// Where schedulers found on `PATH` go inside the archive.
pub const SCHED_BIN_DIR: &str = "sched-bin";

/// The test binaries of a nextest binaries listing (`--list-type binaries-only
/// --message-format json`).
pub fn binaries(listing: &str) -> Result<Vec<PathBuf>, CmdError> {
    let bins = crate::archive::listing_object(listing, "rust-binaries")?;
    let mut out: Vec<PathBuf> = bins
        .values()
        .filter(|b| b["kind"] != "proc-macro")
        .filter_map(|b| b["binary-path"].as_str().map(PathBuf::from))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// What the test binary `bin` says its tests declare. A binary that is not a ktstr test
/// binary runs its tests' listing instead and writes nothing: it declares none.
pub fn list(bin: &Path) -> Result<Vec<DeclaredScheduler>, CmdError> {
    let tmp = tempfile::NamedTempFile::new().map_err(|source| CmdError::Temp { source })?;
    let out = Command::new(bin)
        .env(LIST_SCHEDULERS_ENV, tmp.path())
        // A binary without ktstr tests would run its tests: list them only.
        .args(["--list", "--format", "terse"])
        .output()
        .map_err(|source| CmdError::Spawn {
            command: bin.display().to_string(),
            source,
        })?;
    let text = std::fs::read(tmp.path()).unwrap_or_default();
    if text.is_empty() {
        return if out.status.success() {
            Ok(Vec::new())
        } else {
            Err(CmdError::ListSchedulers {
                bin: bin.to_path_buf(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        };
    }
    serde_json::from_slice(&text).map_err(|source| CmdError::SchedulerList {
        bin: bin.to_path_buf(),
        source,
    })
}

/// The archive's files for `declared` (inside path, host file), and a line per scheduler
/// left out with why. `target_dir`: where nextest's archive already has the workspace's
/// `[[bin]]`s.
pub fn files(
    declared: &[DeclaredScheduler],
    target_dir: &Path,
) -> (Vec<(String, PathBuf)>, Vec<String>) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut notes = Vec::new();
    let mut add = |inside: String, host: PathBuf| {
        if !files.iter().any(|(i, _)| *i == inside) {
            files.push((inside, host));
        }
    };
    let mirrored = |p: &str| format!("{PATHS_DIR}/{}", p.trim_start_matches('/'));
    for d in declared {
        let resolved = match &d.resolved {
            Ok(p) => PathBuf::from(p),
            Err(why) => {
                notes.push(format!(
                    "not packed: scheduler {} of {} ({} {}): {why}",
                    d.name, d.test, d.kind, d.binary
                ));
                continue;
            }
        };
        match d.kind.as_str() {
            "discover" if resolved.starts_with(target_dir) => {}
            "discover" => add(format!("{SCHED_BIN_DIR}/{}", d.binary), resolved),
            "path" => add(mirrored(&d.binary), resolved),
            "installed" => add(
                format!("cache/{}/{}", ktstr::INSTALLED_DIR, d.binary),
                resolved,
            ),
            other => notes.push(format!(
                "not packed: scheduler {} of {}: unknown kind {other}",
                d.name, d.test
            )),
        }
        for (host, _) in &d.files {
            if host.starts_with('/') {
                add(mirrored(host), PathBuf::from(host));
            } else {
                notes.push(format!(
                    "not packed: file {host} of scheduler {}: not an absolute path",
                    d.name
                ));
            }
        }
    }
    (files, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: &str, binary: &str, resolved: Result<&str, &str>) -> DeclaredScheduler {
        DeclaredScheduler {
            test: "t::x".into(),
            name: format!("s_{kind}"),
            kind: kind.into(),
            binary: binary.into(),
            resolved: resolved.map(str::to_string).map_err(str::to_string),
            files: vec![],
        }
    }

    #[test]
    fn each_kind_of_declaration_lands_where_the_shard_looks() {
        let mut with_file = d("path", "/opt/sched/scx_x", Ok("/opt/sched/scx_x"));
        with_file.files = vec![
            ("/etc/scx_x.json".into(), "/etc/scx_x.json".into()),
            ("rel.json".into(), "/etc/rel.json".into()),
        ];
        let declared = [
            d("discover", "scx-ktstr", Ok("/w/target/debug/scx-ktstr")),
            d("discover", "scx_rusty", Ok("/usr/local/bin/scx_rusty")),
            with_file.clone(),
            with_file,
            d(
                "installed",
                "scx_bpfland",
                Ok("/c/schedulers/bin/scx_bpfland"),
            ),
            d("path", "/nope", Err("binary /nope does not exist")),
        ];
        let (files, notes) = files(&declared, Path::new("/w/target"));
        let inside: Vec<&str> = files.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(
            inside,
            [
                "sched-bin/scx_rusty",
                "paths/opt/sched/scx_x",
                "paths/etc/scx_x.json",
                "cache/schedulers/bin/scx_bpfland",
            ]
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("rel.json")), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("/nope does not exist")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_binaries_listing_gives_the_test_binaries() {
        let listing = r#"{"rust-binaries": {
            "ktstr-tests::scx_ktstr": {"binary-path": "/w/target/debug/deps/scx_ktstr-1", "kind": "test"},
            "ktstr-macros": {"binary-path": "/w/target/debug/deps/libm.so", "kind": "proc-macro"},
            "ktstr-tests::bin/scx-ktstr": {"binary-path": "/w/target/debug/deps/scx_ktstr-2", "kind": "bin"}
        }}"#;
        assert_eq!(
            binaries(listing).expect("listing"),
            [
                PathBuf::from("/w/target/debug/deps/scx_ktstr-1"),
                PathBuf::from("/w/target/debug/deps/scx_ktstr-2")
            ]
        );
        assert!(binaries("{}").is_err());
    }
}
