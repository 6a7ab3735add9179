//! libFuzzer target `replay`: a parsed trace replayed with each strategy, invariants checked
//! after every statement, the strategies' answers compared (see `type1_fuzz::replay_target`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = type1_fuzz::replay_target(data);
});
