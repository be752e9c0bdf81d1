use super::*;
use ktstr_record::{RunRecord, Verdict};

fn k(label: &str) -> PackedKernel {
    PackedKernel {
        label: label.into(),
        release: None,
        dir: format!("kernels/{label}"),
        vmlinux_sha256: None,
    }
}

#[test]
fn a_matrix_kernel_line_picks_its_packed_release() {
    let ks = [k("7.3.4"), k("6.18.15"), k("7.0.13"), k("7.0.4")];
    assert_eq!(
        pick_kernel(&ks, "7.3.4")
            .map(|k| k.label)
            .map_err(|e| e.to_string()),
        Ok("7.3.4".into())
    );
    assert_eq!(
        pick_kernel(&ks, "7.3")
            .map(|k| k.label)
            .map_err(|e| e.to_string()),
        Ok("7.3.4".into())
    );
    assert_eq!(
        pick_kernel(&ks, "6.18")
            .map(|k| k.label)
            .map_err(|e| e.to_string()),
        Ok("6.18.15".into())
    );
    let e = pick_kernel(&ks, "7.0").expect_err("two of 7.0").to_string();
    assert!(e.contains("several") && e.contains("7.0.13"), "{e}");
    let e = pick_kernel(&ks, "7.1").expect_err("none").to_string();
    assert!(e.contains("not in the archive"), "{e}");
    // 7.3 is not a prefix of 7.30.x's line.
    assert!(pick_kernel(&[k("7.30.1")], "7.3").is_err());
}

#[test]
fn the_stand_in_workspace_has_the_package_dirs_and_no_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w");
    stand_in_workspace(&w, &["tests".into(), "facade/cargo-ktstr".into()]).expect("made");
    assert!(w.join("Cargo.toml").is_file());
    assert!(w.join("tests").is_dir() && w.join("facade/cargo-ktstr").is_dir());
    for bad in ["../x", "/etc"] {
        let e = stand_in_workspace(&w, &[bad.into()])
            .expect_err(bad)
            .to_string();
        assert!(e.contains("leaves the workspace"), "{e}");
    }
}

#[test]
fn expected_costs_come_from_records_else_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("runs/r1");
    std::fs::create_dir_all(&run).expect("mkdir");
    for (i, total) in [12.0, 14.0, 100.0].into_iter().enumerate() {
        let mut r = RunRecord::new("pkg::a", Verdict::Pass);
        r.duration_s = 2;
        r.phases_s.total = total;
        r.phases_s.slot_wait = 2.0;
        r.phases_s.body = Some(2.0);
        let text = serde_json::to_string(&r).expect("json");
        std::fs::write(run.join(format!("a{i}.json")), text).expect("write");
    }
    let store = Store::new(dir.path());
    let tests = [
        "a".to_string(),
        "b::gauntlet::tiny".to_string(),
        "c".to_string(),
    ];
    let c = expected_costs(&tests, &store);
    assert_eq!(c[0], 12.0, "the median of 10, 12 and 98");
    let tiny = crate::select::parse_variant("b::gauntlet::tiny").expect("variant");
    assert_eq!(c[1], crate::select::model_seconds(tiny.preset, 5));
    assert_eq!(c[2], 15.0, "10 s and the default 5 s duration");
}
