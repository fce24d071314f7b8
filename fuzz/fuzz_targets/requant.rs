//! cargo-fuzz target `requant`: see fuzz/checks/requant.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::requant::run(data));
