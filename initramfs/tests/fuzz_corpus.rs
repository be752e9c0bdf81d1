//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through
//! the code its fuzz target runs, on stable Rust, so what the fuzz campaign
//! established is re-checked on every `cargo test`.

mod exercise;

use std::path::Path;

/// Runs `exercise` over every file of one target's corpus; the file count.
fn replay(target: &str, exercise: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for file in std::fs::read_dir(&dir).expect("fuzz/corpus is committed") {
        let path = file.expect("readable corpus entry").path();
        let data = std::fs::read(&path).expect("readable corpus file");
        exercise(&data);
        n += 1;
    }
    eprintln!("{target}: replayed {n} corpus files");
    n
}

#[test]
fn cpio_corpus_replays() {
    let n = replay("parse_cpio", exercise::cpio::exercise);
    assert!(n >= 10, "only {n} parse_cpio corpus files");
}

#[test]
fn ld_cache_corpus_replays() {
    let n = replay("parse_ld_cache", exercise::ld_cache::exercise);
    assert!(n >= 10, "only {n} parse_ld_cache corpus files");
}

/// The seeds are what they claim: they parse, so the fuzzer started from
/// valid inputs and not only from noise.
#[test]
fn seeds_parse() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for name in ["seed-archive", "seed-concatenated"] {
        let bytes = std::fs::read(corpus.join("parse_cpio").join(name)).expect("seed committed");
        let entries = ktstr_initramfs::parse(&bytes).expect("the seed parses");
        assert!(!entries.is_empty(), "{name} has entries");
    }
    // The new format (glibc 2.32+) and the compat format (old table first).
    for name in ["seed-ldconfig", "seed-ldconfig-compat"] {
        let bytes =
            std::fs::read(corpus.join("parse_ld_cache").join(name)).expect("seed committed");
        let (entries, found) = ktstr_initramfs::exercise_ld_cache(&bytes)
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        assert!(
            entries >= 2 && found >= entries,
            "{name}: {entries} entries, {found} found"
        );
    }
}
