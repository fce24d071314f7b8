//! Replays the fuzz targets' inputs on stable, on every `cargo test`: the committed
//! corpora (`fuzz/corpus/<target>/`, minimised), the regression inputs of past findings
//! (`fuzz/regressions/<target>/`, one file per finding, named after it), and a fixed set
//! of generated inputs, through the same checks the fuzzers run (`fuzz/checks`).

#[allow(dead_code)]
#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::Path;

/// Generated inputs per target: xorshift bytes of a few lengths.
const GENERATED: u64 = 200;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for p in files {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ target.len() as u64;
    for i in 0..GENERATED {
        let len = [0usize, 24, 48, 96, 160][i as usize % 5];
        let bytes = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        out.push((format!("generated #{i}"), bytes));
    }
    out
}

fn replay(target: &str) {
    let (_, check) = checks::TARGETS.iter().find(|(n, _)| *n == target).unwrap();
    let inputs = inputs(target);
    for (name, data) in &inputs {
        if let Err(e) = std::panic::catch_unwind(|| check(data)) {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("fuzz target {target}: input {name} fails: {}", msg.unwrap_or_default());
        }
    }
    eprintln!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn every_target_has_a_replay() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    for n in &names {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets").join(format!("{n}.rs"));
        assert!(bin.exists(), "no cargo-fuzz binary for {n}");
    }
}

#[test]
fn gemm() {
    replay("gemm");
}

#[test]
fn conv() {
    replay("conv");
}

#[test]
fn requant() {
    replay("requant");
}

#[test]
fn quantize() {
    replay("quantize");
}

#[test]
fn codebook() {
    replay("codebook");
}

#[test]
fn pwlq() {
    replay("pwlq");
}

#[test]
fn ffi() {
    replay("ffi");
}
