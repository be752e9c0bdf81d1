//! The walkers over arbitrary guest memory, on stable Rust: every committed fuzz corpus file
//! (`fuzz/corpus/walkers/*`) replayed, and random patches from proptest. Nothing may panic.

mod exercise;

use proptest::prelude::*;

#[test]
fn corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/walkers");
    let mut n = 0;
    for file in std::fs::read_dir(&dir).expect("fuzz/corpus/walkers is committed") {
        let path = file.expect("readable corpus entry").path();
        exercise::exercise(&std::fs::read(&path).expect("readable corpus file"));
        n += 1;
    }
    assert!(n >= 5, "only {n} corpus files under {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random patches anywhere in the crafted objects and page tables.
    #[test]
    fn random_patches_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise::exercise(&data);
    }

    /// Random 8-byte words (pointers, counts) at 8-byte-aligned offsets: the likeliest
    /// corruption, denser than byte noise.
    #[test]
    fn random_words_never_panic(
        words in proptest::collection::vec((0u8..16, 0u16..600, any::<u64>()), 1..24)
    ) {
        let mut data = Vec::new();
        for (target, off, word) in words {
            data.push(target);
            data.extend_from_slice(&(off & !7).to_le_bytes());
            data.push(8);
            data.extend_from_slice(&word.to_le_bytes());
        }
        exercise::exercise(&data);
    }
}
