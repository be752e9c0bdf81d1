//! What the fuzz targets run on one input, shared with the stable corpus replay
//! (`tests/fuzz_corpus.rs`) so what the fuzzer established is re-checked on every
//! `cargo test`. Each fuzz target includes only its own file.

pub mod cpio;
pub mod ld_cache;
