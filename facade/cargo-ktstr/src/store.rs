//! Reading the results store: `<target dir>/ktstr/runs/<run>/*.json`, one
//! record per test run (written by the `ktstr` library, see
//! `ktstr::results`; read as `ktstr_record::RunRecord`s).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ktstr_record::{RecordError, RunRecord, Verdict};

/// The results store.
#[derive(Debug, Clone)]
pub struct Store {
    /// `<target dir>/ktstr`.
    pub dir: PathBuf,
}

impl Store {
    /// The store at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Every run id, oldest first (ids start with their time).
    pub fn runs(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.runs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Whether run `id` exists.
    pub fn has_run(&self, id: &str) -> bool {
        ktstr::config::valid_run_id(id) && self.runs_dir().join(id).is_dir()
    }

    /// The records of run `id` of the current schema (files that cannot be
    /// read, or hold a record of another schema, are skipped and said apart).
    pub fn records(&self, id: &str) -> (Vec<RunRecord>, Vec<RecordError>) {
        read_records(&self.runs_dir().join(id))
    }

    /// Every record of every run.
    pub fn all_records(&self) -> Vec<RunRecord> {
        self.runs().iter().flat_map(|r| self.records(r).0).collect()
    }
}

fn read_records(dir: &Path) -> (Vec<RunRecord>, Vec<RecordError>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for f in files {
        match ktstr_record::read_file(&f) {
            Ok(r) => good.push(r),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

/// The recorded wall times (total less slot wait) of each variant and the
/// declared duration of each test, from every record in the store.
#[derive(Debug, Default)]
pub struct History {
    /// `gauntlet/<test>/<preset>` -> seconds.
    pub variant_seconds: BTreeMap<String, Vec<f64>>,
    /// libtest path of a test -> `duration_s`.
    pub duration_s: BTreeMap<String, u32>,
}

impl History {
    /// The history in `records`.
    pub fn of(records: &[RunRecord]) -> Self {
        let mut h = History::default();
        for r in records {
            let path = ktstr::results::test_path(&r.test).to_string();
            h.duration_s.insert(path, r.duration_s);
            // Only runs that reached a verdict say how long a run takes.
            let p = &r.phases_s;
            if let (Some(v), true) = (&r.variant, p.body.is_some()) {
                h.variant_seconds
                    .entry(v.clone())
                    .or_default()
                    .push((p.total - p.slot_wait).max(0.0));
            }
        }
        h
    }
}

/// `stats list`: one line per run.
pub fn list_runs(store: &Store) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>5} {:>5} {:>5} {:>5}  KERNEL / SCHEDULER",
        "RUN", "TESTS", "PASS", "FAIL", "INCON"
    );
    for id in store.runs() {
        let (recs, _) = store.records(&id);
        let count = |v: Verdict| recs.iter().filter(|r| r.verdict == v).count();
        let mut what: Vec<String> = recs
            .iter()
            .map(|r| {
                let k = r.kernel_release().unwrap_or("?");
                let sched = match &r.scheduler {
                    Some(s) => format!("{} {}", s.name, s.args.join(" "))
                        .trim()
                        .to_string(),
                    None => "EEVDF".into(),
                };
                format!("{k} / {sched}")
            })
            .collect();
        what.sort();
        what.dedup();
        let _ = writeln!(
            s,
            "{id:<28} {:>5} {:>5} {:>5} {:>5}  {}",
            recs.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Inconclusive),
            what.join("; ")
        );
    }
    s
}

/// `stats list --run ID`: one line per record, with its key figures.
pub fn list_run(store: &Store, id: &str) -> String {
    let (recs, bad) = store.records(id);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<52} {:<10} {:<10} {:<12} {:>7}  FIGURES",
        "TEST", "TOPOLOGY", "KERNEL", "VERDICT", "WALL"
    );
    for r in &recs {
        let figs: Vec<String> = r
            .figures
            .iter()
            .map(|(k, x)| format!("{k}={x:.1}"))
            .collect();
        let _ = writeln!(
            s,
            "{:<52} {:<10} {:<10} {:<12} {:>6.1}s  {}",
            r.name(),
            r.topology,
            r.kernel_label().unwrap_or("?"),
            r.verdict.as_str(),
            r.phases_s.total,
            figs.join(" ")
        );
    }
    for b in bad {
        let _ = writeln!(s, "(skipped: {b})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_record::{KernelId, KernelRecord, KernelSource, SchedulerRecord};

    fn rec(
        run: &str,
        test: &str,
        variant: Option<&str>,
        total: f64,
        verdict: Verdict,
    ) -> RunRecord {
        let mut r = RunRecord::new(test, verdict);
        r.run = run.into();
        r.variant = variant.map(str::to_string);
        r.duration_s = 3;
        r.topology = "1n1l2c1t".into();
        let id = KernelId {
            release: Some("7.3.0".into()),
            version: None,
            source: KernelSource::Path {
                path: "/k/vmlinux".into(),
            },
            vmlinux_sha256: "00".into(),
            config_sha256: None,
            config_from: None,
        };
        r.kernel = Some(KernelRecord::new(id, "/k/vmlinux"));
        r.scheduler = Some(SchedulerRecord {
            name: "scx_x".into(),
            binary: "/b/scx_x".into(),
            sha256: None,
            args: vec!["--slow".into()],
        });
        r.figures = [("work_per_worker_per_s".to_string(), 100.0)].into();
        r.phases_s.total = total;
        r.phases_s.slot_wait = 1.0;
        r.phases_s.body = Some(3.0);
        r
    }

    #[test]
    fn the_store_lists_runs_and_learns_durations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let put = |run: &str, file: &str, text: &str| {
            let d = dir.path().join("runs").join(run);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join(file), text).expect("write");
        };
        let json = |r: &RunRecord| serde_json::to_string(r).expect("serializes");
        put(
            "20261127-100000-1",
            "a.json",
            &json(&rec("r1", "t::a", None, 9.0, Verdict::Pass)),
        );
        put(
            "20261127-100000-1",
            "a@tiny.json",
            &json(&rec(
                "r1",
                "t::a",
                Some("gauntlet/a/tiny"),
                11.0,
                Verdict::Fail,
            )),
        );
        put("20261127-090000-2", "junk.json", r#"{"schema": 999}"#);
        assert_eq!(store.runs(), ["20261127-090000-2", "20261127-100000-1"]);
        assert!(store.has_run("20261127-100000-1") && !store.has_run("../x"));
        let (recs, bad) = store.records("20261127-090000-2");
        assert!(recs.is_empty() && bad.len() == 1);
        assert!(
            list_run(&store, "20261127-090000-2").contains("a record of schema 999"),
            "another schema is said with its number"
        );
        let h = History::of(&store.all_records());
        assert_eq!(h.variant_seconds["gauntlet/a/tiny"], [10.0]);
        assert_eq!(h.duration_s["a"], 3);
        let l = list_runs(&store);
        assert!(l.contains("7.3.0 / scx_x --slow"), "{l}");
        let l = list_run(&store, "20261127-100000-1");
        assert!(
            l.contains("gauntlet/a/tiny") && l.contains("work_per_worker_per_s=100.0"),
            "{l}"
        );
    }
}
