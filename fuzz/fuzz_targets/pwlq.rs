//! cargo-fuzz target `pwlq`: see fuzz/checks/pwlq.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::pwlq::run(data));
