//! cargo-fuzz target `quantize`: see fuzz/checks/quantize.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::quantize::run(data));
