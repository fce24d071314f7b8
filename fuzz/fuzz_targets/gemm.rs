//! cargo-fuzz target `gemm`: see fuzz/checks/gemm.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gemm::run(data));
