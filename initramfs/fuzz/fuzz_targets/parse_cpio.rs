//! Arbitrary bytes through the cpio `newc` reader, and the writer over what it read.
#![no_main]

#[path = "../../tests/exercise/cpio.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exercise::exercise(data);
});
