//! Fuzz target: arbitrary request numbers and argument buffers through the uAPI byte
//! dispatcher (`type1::uapi::dispatch::exercise`), with the invariants checked after every call.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    type1::uapi::dispatch::exercise(data);
});
