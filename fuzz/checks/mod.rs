//! The fuzz targets' checks. Each `run(data)` turns fuzzer bytes into a case, runs it on
//! every ISA this CPU has, and panics on a finding: a result different from the scalar
//! reference, an error where the input was valid, or a panic inside qkern.
//!
//! Shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`) and by the stable replay
//! test (`tests/fuzz_replay.rs`), which runs every committed corpus and regression input
//! through the same functions on every `cargo test`.

pub mod codebook;
pub mod common;
pub mod conv;
pub mod ffi;
pub mod gemm;
pub mod pwlq;
pub mod quantize;
pub mod requant;

/// A target's check: panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: (name, check). The name is the cargo-fuzz binary and the corpus folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("gemm", gemm::run),
    ("conv", conv::run),
    ("requant", requant::run),
    ("quantize", quantize::run),
    ("codebook", codebook::run),
    ("pwlq", pwlq::run),
    ("ffi", ffi::run),
];
