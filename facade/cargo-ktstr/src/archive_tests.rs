use super::*;
use crate::shard::{FORMAT, KTSTR_VERSION, PackedKernel};

fn manifest(files: Vec<PackedFile>) -> ArchiveManifest {
    ArchiveManifest {
        format: FORMAT,
        ktstr_version: KTSTR_VERSION.into(),
        archive_id: "a1".into(),
        nextest_archive: "n.tar.zst".into(),
        nextest_binary: None,
        run_ignored: true,
        package_dirs: vec![],
        filter: None,
        tests: vec!["t".into()],
        kernels: vec![PackedKernel {
            label: "7.0.13".into(),
            release: None,
            dir: "kernels/7.0.13".into(),
            vmlinux_sha256: None,
        }],
        files,
        plan: None,
    }
}

/// An archive of two files in `dir`; returns its path.
fn make(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("k")).expect("mkdir");
    std::fs::write(src.join("n.tar.zst"), b"nextest bytes").expect("write");
    std::fs::write(src.join("k/vmlinux"), vec![7u8; 300_000]).expect("write");
    let mut c = Contents::default();
    c.add("n.tar.zst", src.join("n.tar.zst"));
    c.add_dir("kernels/7.0.13", &src.join("k")).expect("dir");
    let m = manifest(c.hashed().expect("hashes"));
    let out = dir.join("run.tar.zst");
    write(&out, &m, &c).expect("written");
    out
}

#[test]
fn archives_round_trip_with_their_hashes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = make(tmp.path());
    let to = tmp.path().join("x");
    let m = unpack(&out, &to).expect("unpacks");
    assert_eq!(m.files.len(), 2);
    assert_eq!(
        std::fs::read(to.join("kernels/7.0.13/vmlinux")).expect("read"),
        vec![7u8; 300_000]
    );
    assert_eq!(
        kernel_path(&to.join("kernels/7.0.13")),
        to.join("kernels/7.0.13/vmlinux")
    );
    // Compressed: 300 kB of one byte is far smaller.
    assert!(std::fs::metadata(&out).expect("meta").len() < 100_000);
}

#[test]
fn damaged_archives_say_so_and_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = make(tmp.path());
    let bytes = std::fs::read(&out).expect("read");
    // Cut in half: the stream ends early.
    let cut = tmp.path().join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = unpack(&cut, &tmp.path().join("c"))
        .expect_err("cut")
        .to_string();
    assert!(e.contains("damaged or not a ktstr archive"), "{e}");
    assert!(e.contains("cargo ktstr archive"), "{e}");
    // Not zstd at all.
    let junk = tmp.path().join("junk.tar.zst");
    std::fs::write(&junk, b"hello, not an archive").expect("write");
    let e = unpack(&junk, &tmp.path().join("j"))
        .expect_err("junk")
        .to_string();
    assert!(e.contains("junk.tar.zst: damaged"), "{e}");
    // A member whose bytes are not the ones the manifest hashed.
    let src = tmp.path().join("src");
    let mut c = Contents::default();
    c.add("n.tar.zst", src.join("n.tar.zst"));
    let mut files = c.hashed().expect("hashes");
    files[0].sha256 = "00".repeat(32);
    let bad = tmp.path().join("bad.tar.zst");
    write(&bad, &manifest(files), &c).expect("written");
    let e = unpack(&bad, &tmp.path().join("b"))
        .expect_err("hash")
        .to_string();
    assert!(
        e.contains("n.tar.zst: SHA-256") && e.contains("the manifest says"),
        "{e}"
    );
}

#[test]
fn archives_of_another_version_are_refused_by_name() {
    let text = serde_json::to_string(&ArchiveManifest {
        ktstr_version: "0.0.1".into(),
        ..manifest(vec![])
    })
    .expect("json");
    let e = check_manifest(Path::new("run.tar.zst"), &text)
        .expect_err("old")
        .to_string();
    assert!(
        e.contains("made by cargo-ktstr 0.0.1")
            && e.contains(KTSTR_VERSION)
            && e.contains("run it with cargo-ktstr 0.0.1"),
        "{e}"
    );
    let e = check_manifest(Path::new("run.tar.zst"), "{}")
        .expect_err("empty")
        .to_string();
    assert!(e.contains("its manifest"), "{e}");
}

#[test]
fn nextest_listings_give_the_matching_tests() {
    let listing = r#"{"rust-suites": {
        "pkg::vm": {"testcases": {
            "a": {"ignored": false, "filter-match": {"status": "matches"}},
            "a::gauntlet::tiny": {"ignored": true, "filter-match": {"status": "matches"}},
            "b": {"ignored": false, "filter-match": {"status": "mismatch", "reason": "partition"}}
        }},
        "pkg::other": {"testcases": {}}
    }}"#;
    assert_eq!(
        matching_tests(listing).expect("listing"),
        ["a", "a::gauntlet::tiny"]
    );
    assert!(matching_tests("not json").is_err());
    assert_eq!(
        exact_filter(&["a".into(), "b::gauntlet::x".into()]),
        "test(=a) | test(=b::gauntlet::x)"
    );
}
