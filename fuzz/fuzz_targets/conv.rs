//! cargo-fuzz target `conv`: see fuzz/checks/conv.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::conv::run(data));
