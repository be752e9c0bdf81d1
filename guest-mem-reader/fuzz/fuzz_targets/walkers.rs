//! Arbitrary patches of a crafted guest's memory, then every walker (runqueues, DSQs, the map
//! idr, map values, program BTF, globals).
#![no_main]

#[path = "../../tests/exercise/mod.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    exercise::exercise(data);
});
