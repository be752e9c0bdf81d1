//! Arbitrary bytes through the `/etc/ld.so.cache` reader and its lookups.
#![no_main]

#[path = "../../tests/exercise/ld_cache.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exercise::exercise(data);
});
