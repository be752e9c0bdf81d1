use super::*;
use crate::shard::{FORMAT, KTSTR_VERSION};
use ktstr_record::{KernelId, KernelRecord, KernelSource, Verdict};

fn rec(test: &str, preset: Option<&str>, verdict: Verdict) -> RunRecord {
    let mut r = RunRecord::new(format!("pkg::{test}"), verdict);
    r.run = "shard-run".into();
    r.preset = preset.map(str::to_string);
    r.variant = preset.map(|p| format!("gauntlet/{test}/{p}"));
    r.topology = "1n1l2c1t".into();
    let id = KernelId {
        release: Some("7.0.13+deb13-cloud-amd64".into()),
        version: None,
        source: KernelSource::Path {
            path: "/k/vmlinux".into(),
        },
        vmlinux_sha256: "00".into(),
        config_sha256: None,
        config_from: None,
    };
    r.kernel = Some(KernelRecord::new(id, "/k/vmlinux"));
    r.workers = Vec::new();
    r.phases_s.total = 10.0;
    r
}

fn manifest(tests: &[&str], all: &[&str], finished: bool) -> ShardManifest {
    ShardManifest {
        format: FORMAT,
        ktstr_version: KTSTR_VERSION.into(),
        archive_id: "arch-1".into(),
        archive_tests: all.iter().map(|s| s.to_string()).collect(),
        archive_kernels: vec!["7.0.13".into()],
        kernel: "7.0.13".into(),
        partition: "plan:1/2".into(),
        tests: tests.iter().map(|s| s.to_string()).collect(),
        run: "shard-run".into(),
        started_unix: 1,
        finished_unix: finished.then_some(2),
        wall_s: finished.then_some(1.0),
        passed: finished.then_some(true),
    }
}

const ALL: [&str; 3] = ["a", "a::gauntlet::tiny", "b"];

fn shard(dir: &str, m: Option<ShardManifest>, recs: Vec<RunRecord>) -> ShardResults {
    ShardResults {
        dir: dir.into(),
        manifest: m,
        records: recs,
    }
}

#[test]
fn complete_shards_merge_to_every_test_once() {
    let s1 = shard(
        "s1",
        Some(manifest(&["a", "a::gauntlet::tiny"], &ALL, true)),
        vec![
            rec("a", None, Verdict::Pass),
            rec("a", Some("tiny"), Verdict::Pass),
        ],
    );
    let s2 = shard(
        "s2",
        Some(manifest(&["b"], &ALL, true)),
        vec![rec("b", None, Verdict::Fail)],
    );
    let m = merge(&[s1, s2]);
    assert!(m.complete(), "{}", m.problems());
    let mut names: Vec<String> = m.records.iter().map(shard::libtest_name).collect();
    names.sort();
    assert_eq!(names, ["a", "a::gauntlet::tiny", "b"]);
}

#[test]
fn lost_doubled_and_unfinished_tests_are_named() {
    // s1 finished but lacks a::gauntlet::tiny; s2 was killed after a,
    // which s1 ran too; nobody ran b.
    let s1 = shard(
        "s1",
        Some(manifest(&["a", "a::gauntlet::tiny"], &ALL, true)),
        vec![rec("a", None, Verdict::Pass)],
    );
    let s2 = shard(
        "s2",
        Some(manifest(&["a", "b"], &ALL, false)),
        vec![rec("a", None, Verdict::Fail)],
    );
    let m = merge(&[s1, s2]);
    assert!(!m.complete());
    let key = |t: &str| ("7.0.13".to_string(), t.to_string());
    assert_eq!(
        m.missing,
        [key("a::gauntlet::tiny"), key("b")].into_iter().collect()
    );
    assert_eq!(
        m.doubled[&key("a")],
        [PathBuf::from("s1"), PathBuf::from("s2")]
    );
    assert_eq!(m.unfinished, [(PathBuf::from("s2"), vec!["b".to_string()])]);
    // The first shard's record is kept: never both, never none.
    assert_eq!(m.records.len(), 1);
    assert_eq!(m.records[0].verdict, Verdict::Pass);
    let p = m.problems();
    assert!(p.contains("shard s2 did not finish"), "{p}");
    assert!(
        p.contains("no record in any shard: a::gauntlet::tiny"),
        "{p}"
    );
    assert!(
        p.contains("a (kernel 7.0.13) ran in more than one shard: s1, s2"),
        "{p}"
    );
}

#[test]
fn shards_of_other_archives_or_versions_are_refused() {
    let mut other = manifest(&["b"], &ALL, true);
    other.archive_id = "arch-2".into();
    let mut old = manifest(&["b"], &ALL, true);
    old.ktstr_version = "0.0.1".into();
    let m = merge(&[
        shard("s1", Some(manifest(&["a"], &ALL, true)), vec![]),
        shard("s2", Some(other), vec![]),
        shard("s3", Some(old), vec![]),
    ]);
    let p = m.problems();
    assert!(
        p.contains("s2 ran archive arch-2 but s1 ran archive arch-1"),
        "{p}"
    );
    assert!(p.contains("s3 was run by cargo-ktstr 0.0.1"), "{p}");
    // Plain stores merge, but say that lost tests cannot be named.
    let m = merge(&[shard("d", None, vec![rec("a", None, Verdict::Pass)])]);
    assert!(!m.complete() && m.problems().contains("cannot be named"));
}

fn put_shard(root: &Path, name: &str, m: &ShardManifest, recs: &[RunRecord]) -> PathBuf {
    let dir = root.join(name);
    let run = dir.join("results/runs").join(&m.run);
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::write(
        dir.join("results").join(shard::SHARD_MANIFEST),
        serde_json::to_string(m).expect("json"),
    )
    .expect("write");
    for r in recs {
        let f = run.join(ktstr::results::record_file_name(
            &r.test,
            r.preset.as_deref(),
        ));
        std::fs::write(f, serde_json::to_string(r).expect("json")).expect("write");
    }
    dir
}

#[test]
fn merged_stores_are_read_back_as_one_run_with_reports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d1 = put_shard(
        tmp.path(),
        "s1",
        &manifest(&["a", "a::gauntlet::tiny"], &ALL, true),
        &[
            rec("a", None, Verdict::Pass),
            rec("a", Some("tiny"), Verdict::Pass),
        ],
    );
    let d2 = put_shard(
        tmp.path(),
        "s2",
        &manifest(&["b"], &ALL, true),
        &[rec("b", None, Verdict::Pass)],
    );
    let shards = [read_shard(&d1).expect("s1"), read_shard(&d2).expect("s2")];
    let m = merge(&shards);
    assert!(m.complete(), "{}", m.problems());
    let out = tmp.path().join("merged");
    write(&m, &out, "m1").expect("written");
    let store = Store::new(&out);
    let (recs, bad) = store.records("m1");
    assert!(bad.is_empty());
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r.run == "m1"));
    let reports = crate::runs::write_reports(&store, "m1").expect("reports");
    for f in ["report.html", "junit.xml", "trace.json"] {
        assert!(reports.join(f).is_file(), "{f}");
    }
    let junit = std::fs::read_to_string(reports.join("junit.xml")).expect("junit");
    assert_eq!(junit.matches("<testcase ").count(), 3, "{junit}");
    // A second merge is a second run of the same store.
    assert!(write(&m, &out, "m1").is_err(), "a run is never overwritten");
    write(&m, &out, "m2").expect("second");
    assert_eq!(store.runs(), ["m1", "m2"]);
}

#[test]
fn damaged_shards_say_which_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = read_shard(&tmp.path().join("nope"))
        .expect_err("no store")
        .to_string();
    assert!(e.contains("not a results store"), "{e}");
    let d = put_shard(
        tmp.path(),
        "s1",
        &manifest(&["a"], &ALL, true),
        &[rec("a", None, Verdict::Pass)],
    );
    let run = d.join("results/runs/shard-run");
    std::fs::write(run.join("torn.json"), "{\"schema\": 1, \"te").expect("write");
    let e = read_shard(&d).expect_err("torn record").to_string();
    assert!(
        e.contains("torn.json") && e.contains("cannot be read"),
        "{e}"
    );
    std::fs::write(d.join("results").join(shard::SHARD_MANIFEST), "{").expect("write");
    let e = read_shard(&d).expect_err("torn manifest").to_string();
    assert!(e.contains("not a shard manifest"), "{e}");
}

#[test]
fn stats_compare_reads_merged_runs() {
    // Eight merged runs of two shards each: A = m1..m4, B = m5..m8 (half
    // the work; four a side, so p < 0.05 can be reached): compare finds the
    // regression across merged runs.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let with_work = |test: &str, progress: u64| {
        let mut r = rec(test, None, Verdict::Pass);
        r.workers = (0..4)
            .map(|index| ktstr_record::WorkerRecord {
                index,
                progress: progress + index as u64,
                wall: std::time::Duration::from_secs(2),
                ..ktstr_record::WorkerRecord::default()
            })
            .collect();
        r
    };
    let runs = [
        ("m1", 1000),
        ("m2", 1010),
        ("m3", 990),
        ("m4", 1005),
        ("m5", 500),
        ("m6", 505),
        ("m7", 498),
        ("m8", 510),
    ];
    for (run, progress) in runs {
        let shards = [
            shard(
                "s1",
                Some(manifest(&["a"], &["a", "b"], true)),
                vec![with_work("a", progress)],
            ),
            shard(
                "s2",
                Some(manifest(&["b"], &["a", "b"], true)),
                vec![with_work("b", progress)],
            ),
        ];
        let m = merge(&shards);
        assert!(m.complete(), "{}", m.problems());
        write(&m, &out, run).expect("written");
    }
    let c = crate::CompareCmd {
        a: "run:m1,m2,m3,m4".into(),
        b: "run:m5,m6,m7,m8".into(),
        test_name: Some("a".into()),
        reps: 5,
        figure: vec!["work_per_worker_per_s".into()],
        alpha: 0.05,
        package: vec![],
        test: vec![],
        allow_inconclusive: false,
        no_nextest: false,
        store: Some(out),
    };
    match crate::runs::stats_compare(&c) {
        Ok(crate::Done::Failed(why)) => assert!(why.contains("work_per_worker_per_s"), "{why}"),
        other => panic!("expected a regression of B, got {other:?}"),
    }
}
