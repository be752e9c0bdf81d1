//! Reading the results store: `<target dir>/ktstr/runs/<run>/*.json`, one
//! record per test run (written by the `ktstr` library, see
//! `ktstr::results`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

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

    /// The records of run `id` of the current schema (unreadable files are
    /// skipped, their paths returned apart).
    pub fn records(&self, id: &str) -> (Vec<Value>, Vec<PathBuf>) {
        read_records(&self.runs_dir().join(id))
    }

    /// Every record of every run.
    pub fn all_records(&self) -> Vec<Value> {
        self.runs().iter().flat_map(|r| self.records(r).0).collect()
    }
}

fn read_records(dir: &Path) -> (Vec<Value>, Vec<PathBuf>) {
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
        match std::fs::read(&f)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(v) if v["schema"].as_u64() == Some(ktstr::results::SCHEMA) => good.push(v),
            _ => bad.push(f),
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
    pub fn of(records: &[Value]) -> Self {
        let mut h = History::default();
        for r in records {
            let test = r["test"].as_str().unwrap_or_default();
            let path = ktstr::results::test_path(test).to_string();
            if let Some(d) = r["duration_s"].as_u64().and_then(|d| u32::try_from(d).ok()) {
                h.duration_s.insert(path, d);
            }
            // Only runs that reached a verdict say how long a run takes.
            let judged = r["phases_s"]["body"].as_f64().is_some();
            if let (Some(v), Some(total), true) = (
                r["variant"].as_str(),
                r["phases_s"]["total"].as_f64(),
                judged,
            ) {
                let wait = r["phases_s"]["slot_wait"].as_f64().unwrap_or(0.0);
                h.variant_seconds
                    .entry(v.to_string())
                    .or_default()
                    .push((total - wait).max(0.0));
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
        let count = |v: &str| recs.iter().filter(|r| r["verdict"] == v).count();
        let mut what: Vec<String> = recs
            .iter()
            .map(|r| {
                let k = r["kernel"]["release"].as_str().unwrap_or("?");
                let sched = match r["scheduler"]["name"].as_str() {
                    Some(n) => {
                        let args: Vec<&str> = r["scheduler"]["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        format!("{n} {}", args.join(" ")).trim().to_string()
                    }
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
            count("pass"),
            count("fail"),
            count("inconclusive"),
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
        let name = r["variant"].as_str().or(r["test"].as_str()).unwrap_or("?");
        let figs: Vec<String> = r["figures"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_f64().map(|x| format!("{k}={x:.1}")))
            .collect();
        let _ = writeln!(
            s,
            "{name:<52} {:<10} {:<10} {:<12} {:>6.1}s  {}",
            r["topology"].as_str().unwrap_or("?"),
            r["kernel"]["label"]
                .as_str()
                .or(r["kernel"]["release"].as_str())
                .unwrap_or("?"),
            r["verdict"].as_str().unwrap_or("?"),
            r["phases_s"]["total"].as_f64().unwrap_or(0.0),
            figs.join(" ")
        );
    }
    for b in bad {
        let _ = writeln!(s, "(unreadable or of another schema: {})", b.display());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(run: &str, test: &str, variant: Option<&str>, total: f64, verdict: &str) -> Value {
        json!({
            "schema": ktstr::results::SCHEMA, "run": run, "test": test, "variant": variant,
            "verdict": verdict, "duration_s": 3, "topology": "1n1l2c1t",
            "kernel": {"release": "7.3.0"}, "scheduler": {"name": "scx_x", "args": ["--slow"]},
            "figures": {"work_per_worker_per_s": 100.0},
            "phases_s": {"total": total, "slot_wait": 1.0, "body": 3.0},
        })
    }

    #[test]
    fn the_store_lists_runs_and_learns_durations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let put = |run: &str, file: &str, v: &Value| {
            let d = dir.path().join("runs").join(run);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join(file), v.to_string()).expect("write");
        };
        put(
            "20261127-100000-1",
            "a.json",
            &rec("r1", "t::a", None, 9.0, "pass"),
        );
        put(
            "20261127-100000-1",
            "a@tiny.json",
            &rec("r1", "t::a", Some("gauntlet/a/tiny"), 11.0, "fail"),
        );
        put("20261127-090000-2", "junk.json", &json!({"schema": 999}));
        assert_eq!(store.runs(), ["20261127-090000-2", "20261127-100000-1"]);
        assert!(store.has_run("20261127-100000-1") && !store.has_run("../x"));
        let (recs, bad) = store.records("20261127-090000-2");
        assert!(recs.is_empty() && bad.len() == 1);
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
