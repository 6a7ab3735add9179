//! libFuzzer target `parse`: the trace reader and parser never panic, and what they accept
//! round-trips (see `type1_fuzz::parse_target`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    type1_fuzz::parse_target(data);
});
