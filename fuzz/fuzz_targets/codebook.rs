//! cargo-fuzz target `codebook`: see fuzz/checks/codebook.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::codebook::run(data));
