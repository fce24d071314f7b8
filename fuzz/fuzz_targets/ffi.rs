//! cargo-fuzz target `ffi`: see fuzz/checks/ffi.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ffi::run(data));
