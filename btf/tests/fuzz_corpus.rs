//! Replays every committed fuzz corpus file (`fuzz/corpus/*/*`) through the parser and all
//! queries on stable Rust, so what the fuzz campaign established is re-checked on every CI run.

mod exercise;

#[test]
fn corpus_replays_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for target in std::fs::read_dir(&root).expect("fuzz/corpus is committed") {
        let target = target.expect("readable corpus directory");
        for file in std::fs::read_dir(target.path()).expect("readable corpus directory") {
            let path = file.expect("readable corpus entry").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            exercise::exercise(&data);
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} corpus files under {}", root.display());
    eprintln!("replayed {n} corpus files");
}

#[test]
fn synthetic_btf_goes_through_every_query() {
    exercise::exercise(&ktstr_btf::testdata::tiny());
    exercise::exercise(&ktstr_btf::testdata::tiny_split().1);
}
