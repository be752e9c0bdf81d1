//! `cargo ktstr merge DIR...`: the results of N shards joined into one run
//! of one results store, with its reports; tests no shard ran, tests two
//! shards ran and shards that did not finish are named, never dropped
//! silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ktstr_record::RunRecord;

use crate::error::CmdError;
use crate::shard::{self, ShardManifest};
use crate::store::Store;

/// One shard's results as read: its store, manifest (if it has one) and
/// every record of every run in it.
#[derive(Debug, Clone)]
pub struct ShardResults {
    /// The directory given.
    pub dir: PathBuf,
    /// Its `shard.json`, when written by `cargo ktstr run --archive`.
    pub manifest: Option<ShardManifest>,
    /// Its records.
    pub records: Vec<RunRecord>,
}

/// A test of the merged run: (kernel label, libtest name).
pub type Key = (String, String);

/// What merging found.
#[derive(Debug, Default)]
pub struct Merged {
    /// The records kept, one per key.
    pub records: Vec<RunRecord>,
    /// Keys more than one shard (or one shard twice) has a record of, with
    /// the directories; the first one's record is kept.
    pub doubled: BTreeMap<Key, Vec<PathBuf>>,
    /// Keys of the archive that no shard has a record of.
    pub missing: BTreeSet<Key>,
    /// Shards whose nextest did not end (killed), with their tests that
    /// have no record.
    pub unfinished: Vec<(PathBuf, Vec<String>)>,
    /// Why merging cannot proceed at all (shards of different archives or
    /// versions).
    pub refused: Vec<String>,
    /// Whether the expected set was known (every shard had a manifest).
    pub expected_known: bool,
}

impl Merged {
    /// Whether the merged run is the whole run, each test once.
    pub fn complete(&self) -> bool {
        self.doubled.is_empty()
            && self.missing.is_empty()
            && self.unfinished.is_empty()
            && self.refused.is_empty()
            && self.expected_known
    }

    /// Every problem, one line each.
    pub fn problems(&self) -> String {
        let mut s = String::new();
        for r in &self.refused {
            let _ = writeln!(s, "{r}");
        }
        for (dir, tests) in &self.unfinished {
            let _ = writeln!(
                s,
                "shard {} did not finish (killed, or still running): {} of its tests have no \
                 record: {}; run that shard again",
                dir.display(),
                tests.len(),
                tests.join(", ")
            );
        }
        if !self.missing.is_empty() {
            let names: Vec<String> = self
                .missing
                .iter()
                .map(|(k, t)| format!("{t} (kernel {k})"))
                .collect();
            let _ = writeln!(
                s,
                "{} test(s) of the archive have no record in any shard: {}",
                names.len(),
                names.join(", ")
            );
        }
        for ((k, t), dirs) in &self.doubled {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let _ = writeln!(
                s,
                "{t} (kernel {k}) ran in more than one shard: {} (the first one's record is kept)",
                dirs.join(", ")
            );
        }
        if !self.expected_known {
            let _ = writeln!(
                s,
                "a directory has no {} (not a shard of `cargo ktstr run --archive`): tests that \
                 no shard ran cannot be named",
                shard::SHARD_MANIFEST
            );
        }
        s
    }
}

/// The kernel a record of `shard` counts under: the shard's, else the
/// record's label.
fn kernel_of(r: &RunRecord, m: Option<&ShardManifest>) -> String {
    m.map(|m| m.kernel.clone())
        .or_else(|| r.kernel_label().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Joins `shards` (pure).
pub fn merge(shards: &[ShardResults]) -> Merged {
    let mut out = Merged {
        expected_known: !shards.is_empty() && shards.iter().all(|s| s.manifest.is_some()),
        ..Merged::default()
    };
    let manifests: Vec<(&Path, &ShardManifest)> = shards
        .iter()
        .filter_map(|s| s.manifest.as_ref().map(|m| (s.dir.as_path(), m)))
        .collect();
    if let Some((d0, m0)) = manifests.first() {
        for (d, m) in &manifests[1..] {
            if m.archive_id != m0.archive_id {
                out.refused.push(format!(
                    "{} ran archive {} but {} ran archive {}: merge shards of one archive",
                    d.display(),
                    m.archive_id,
                    d0.display(),
                    m0.archive_id
                ));
            }
        }
    }
    for (d, m) in &manifests {
        if m.format != shard::FORMAT || m.ktstr_version != shard::KTSTR_VERSION {
            out.refused.push(format!(
                "{} was run by cargo-ktstr {} (manifest format {}); this is {} (format {}): \
                 merge with the version that ran it",
                d.display(),
                m.ktstr_version,
                m.format,
                shard::KTSTR_VERSION,
                shard::FORMAT
            ));
        }
    }
    let mut seen: BTreeMap<Key, PathBuf> = BTreeMap::new();
    for s in shards {
        let m = s.manifest.as_ref();
        let mut own: BTreeSet<String> = BTreeSet::new();
        for r in &s.records {
            let key = (kernel_of(r, m), shard::libtest_name(r));
            own.insert(key.1.clone());
            match seen.get(&key) {
                Some(first) => {
                    out.doubled
                        .entry(key)
                        .or_insert_with(|| vec![first.clone()])
                        .push(s.dir.clone());
                }
                None => {
                    seen.insert(key, s.dir.clone());
                    out.records.push(r.clone());
                }
            }
        }
        if let Some(m) = m
            && m.finished_unix.is_none()
        {
            let lost: Vec<String> = m
                .tests
                .iter()
                .filter(|t| !own.contains(*t))
                .cloned()
                .collect();
            out.unfinished.push((s.dir.clone(), lost));
        }
    }
    for (_, m) in &manifests {
        for k in &m.archive_kernels {
            for t in &m.archive_tests {
                let key = (k.clone(), t.clone());
                if !seen.contains_key(&key) {
                    out.missing.insert(key);
                }
            }
        }
    }
    out
}

/// The results store in `dir`: `dir` itself, or `dir/results` (a shard's
/// directory of `cargo ktstr run --archive`).
pub fn store_in(dir: &Path) -> Result<PathBuf, CmdError> {
    for d in [dir.to_path_buf(), dir.join("results")] {
        if d.join("runs").is_dir() || d.join(shard::SHARD_MANIFEST).is_file() {
            return Ok(d);
        }
    }
    Err(CmdError::NotAStore {
        dir: dir.to_path_buf(),
    })
}

/// Reads one shard's directory. A record that cannot be read is an error:
/// merging never drops a test silently.
pub fn read_shard(dir: &Path) -> Result<ShardResults, CmdError> {
    let store_dir = store_in(dir)?;
    let file = store_dir.join(shard::SHARD_MANIFEST);
    let manifest = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            serde_json::from_str::<ShardManifest>(&text).map_err(|source| {
                CmdError::BadShardManifest {
                    file: file.clone(),
                    source,
                }
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CmdError::io(&file, e)),
    };
    let store = Store::new(&store_dir);
    let runs = match &manifest {
        Some(m) => vec![m.run.clone()],
        None => store.runs(),
    };
    let mut records = Vec::new();
    for run in runs {
        let (good, bad) = store.records(&run);
        let count = bad.len();
        if let Some(first) = bad.into_iter().next() {
            return Err(CmdError::UnreadableRecords {
                first,
                count,
                store: store_dir,
            });
        }
        records.extend(good);
    }
    Ok(ShardResults {
        dir: dir.to_path_buf(),
        manifest,
        records,
    })
}

/// The file a merged record is stored in: its test's, with the kernel when
/// the run has more than one.
fn file_name(r: &RunRecord, kernel: Option<&str>) -> String {
    let base = ktstr::results::record_file_name(&r.test, r.preset.as_deref());
    match kernel {
        Some(k) => {
            let k: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{}~{k}.json", base.trim_end_matches(".json"))
        }
        None => base,
    }
}

/// Writes the merged records as run `run` of the store at `out`; returns
/// the run's directory.
pub fn write(merged: &Merged, out: &Path, run: &str) -> Result<PathBuf, CmdError> {
    let dir = out.join("runs").join(run);
    if dir.exists() {
        return Err(CmdError::RunExists { dir });
    }
    std::fs::create_dir_all(&dir).map_err(|e| CmdError::io(&dir, e))?;
    let kernels: BTreeSet<Option<&str>> = merged.records.iter().map(|r| r.kernel_label()).collect();
    let many = kernels.len() > 1;
    for r in &merged.records {
        let mut r = r.clone();
        r.run = run.to_string();
        let kernel = many.then(|| r.kernel_label().unwrap_or("none").to_string());
        let file = dir.join(file_name(&r, kernel.as_deref()));
        let text =
            serde_json::to_string_pretty(&r).map_err(|source| CmdError::RecordNotSerialized {
                test: r.test.clone(),
                source,
            })?;
        std::fs::write(&file, format!("{text}\n")).map_err(|e| CmdError::io(&file, e))?;
    }
    Ok(dir)
}

/// `cargo ktstr merge`.
pub fn run(c: &crate::MergeCmd) -> Result<crate::Done, CmdError> {
    if c.dirs.is_empty() {
        return Err(CmdError::NoShards);
    }
    let shards = c
        .dirs
        .iter()
        .map(|d| read_shard(d))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge(&shards);
    if !merged.refused.is_empty() {
        return Err(CmdError::MergeRefused {
            problems: merged.problems().lines().map(str::to_string).collect(),
        });
    }
    let out = c
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("ktstr-merged"));
    let run = match &c.run {
        Some(r) if ktstr::config::valid_run_id(r) => r.clone(),
        Some(r) => return Err(CmdError::BadRunId { run: r.clone() }),
        None => crate::runs::new_run_id("-merged"),
    };
    let dir = write(&merged, &out, &run)?;
    let store = Store::new(&out);
    print!("{}", crate::store::list_run(&store, &run));
    let reports = crate::runs::write_reports(&store, &run)?;
    println!(
        "merged {} shard(s): {} record(s) in {}\nreports: {r}/report.html, {r}/junit.xml, \
         {r}/trace.json",
        shards.len(),
        merged.records.len(),
        dir.display(),
        r = reports.display(),
    );
    for s in &shards {
        if let Some(m) = &s.manifest {
            println!(
                "  {}: {} {} test(s), {} record(s), wall {}",
                s.dir.display(),
                m.partition,
                m.tests.len(),
                s.records.len(),
                m.wall_s.map_or_else(|| "?".into(), |w| format!("{w:.0}s"))
            );
        }
    }
    if merged.complete() {
        println!("every test of the archive has exactly one record");
    }
    let failed = merged
        .records
        .iter()
        .filter(|r| r.verdict != ktstr_record::Verdict::Pass)
        .count();
    Ok(match (merged.complete(), failed) {
        (true, 0) => crate::Done::Ok,
        (true, n) => crate::Done::Failed(format!("{n} test(s) did not pass")),
        (false, _) => crate::Done::Failed(merged.problems().trim_end().to_string()),
    })
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
