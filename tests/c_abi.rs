//! The C ABI: the C example compiled with `cc` (`aarch64-linux-gnu-gcc` in an aarch64
//! build, run under qemu-user when the host cannot run it) against the static (and
//! shared) library and run, and every extern function called directly with bad input
//! (null pointers, zero and huge sizes, inconsistent shapes, invalid enum values,
//! overlapping buffers): always a status and a message, never a crash.

use std::ffi::CStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use qkern::ffi::*;
use qkern::ffi::qk_status::*;
use qkern::{Activations, MatrixMut, MatrixRef, PackedWeights, Requantize, RequantMode, WeightQuant};

// ---------------------------------------------------------------------------------------
// Helpers

fn last_error() -> String {
    // SAFETY: never NULL, valid until the next qkern call on this thread; copied at once.
    unsafe { CStr::from_ptr(qk_last_error()) }.to_str().expect("UTF-8 message").to_owned()
}

/// Asserts a status and that the message names the function and contains `needle`.
#[track_caller]
fn expect_err(st: qk_status, want: qk_status, func: &str, needle: &str) {
    let msg = last_error();
    assert_eq!(st, want, "status (message: {msg})");
    assert!(msg.starts_with(&format!("{func}: ")), "message should name {func}: {msg}");
    assert!(msg.contains(needle), "message should contain {needle:?}: {msg}");
}

#[track_caller]
fn expect_ok(st: qk_status) {
    let msg = last_error();
    assert_eq!(st, QK_OK, "{msg}");
    assert_eq!(msg, "", "a success clears the message");
}

/// target/<profile>, from this test executable's path (target/<profile>/deps/c_abi-…).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<exe>").to_path_buf()
}

/// The library file `name` (libqkern.a or libqkern.so) built from the same sources as
/// this test.
///
/// `cargo test` compiles the library once with all its crate types (rlib, cdylib,
/// staticlib) into target/<profile>/deps/ and does not copy them up to
/// target/<profile>/ (only `cargo build` does), so deps/ holds the one made with the rlib
/// this test links. If it is missing or older than that rlib (someone deleted it), build
/// it with `cargo build --lib` into the same target dir.
fn library(name: &str) -> PathBuf {
    let dir = profile_dir();
    let in_deps = dir.join("deps").join(name);
    let rlib = dir.join("deps/libqkern.rlib");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(lib), Some(r)) = (mtime(&in_deps), mtime(&rlib)) {
        // Written by the same rustc invocation, a few ms apart.
        if lib + std::time::Duration::from_secs(60) >= r {
            return in_deps;
        }
    }
    let profile = dir.file_name().and_then(|s| s.to_str()).expect("profile dir name").to_owned();
    let mut target = dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // A `--target` build lives in <target dir>/<triple>/<profile>: rebuild it for that triple.
    if let Some(triple) = CROSS_TRIPLE.filter(|t| target.file_name().is_some_and(|n| n == *t)) {
        target = target.parent().expect("target dir");
        cmd.args(["build", "--lib", "--target", triple]);
    } else {
        cmd.args(["build", "--lib"]);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env("CARGO_TARGET_DIR", target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        p => {
            cmd.args(["--profile", p]);
        }
    }
    let st = cmd.status().expect("run cargo build --lib");
    assert!(st.success(), "cargo build --lib failed");
    let built = dir.join(name);
    assert!(built.exists(), "{} not found after cargo build --lib", built.display());
    built
}

/// The target triple of a build that may be a cross build (tested under qemu-user), as
/// cargo names its `--target` directory.
const CROSS_TRIPLE: Option<&str> =
    if cfg!(all(target_arch = "aarch64", target_os = "linux", target_env = "gnu")) { Some("aarch64-unknown-linux-gnu") } else { None };

/// The C compiler for the architecture this test was built for. In an aarch64 build:
/// `$CC_aarch64_unknown_linux_gnu` (cc-rs's convention), else Debian's
/// `aarch64-linux-gnu-gcc` when it is on PATH (the cross compiler on an x86-64 host, the
/// native gcc on Debian arm64) — the host's `cc` would link an x86-64 program against an
/// aarch64 library. Otherwise, and as the fallback, `$CC` or `cc`.
fn c_compiler() -> String {
    if let Some(triple) = CROSS_TRIPLE {
        if let Ok(cc) = std::env::var(format!("CC_{}", triple.replace('-', "_"))) {
            return cc;
        }
        let cross = "aarch64-linux-gnu-gcc";
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cross).is_file()));
        if on_path {
            return cross.into();
        }
    }
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Runs the compiled C program: directly, or — in an aarch64 build on a host of another
/// architecture (this test itself runs under qemu-user) — under the same runner cargo
/// used for this test: `$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER` (how .ci/run
/// picks the CPU model), else `qemu-aarch64 -L /usr/aarch64-linux-gnu` with qemu's default
/// CPU (or `$QEMU_CPU`).
fn run_program(exe: &Path) -> std::process::Output {
    let emulated = CROSS_TRIPLE.filter(|_| {
        // qemu-user tells this process it runs on aarch64, but a host program it starts
        // runs natively and sees the real machine. (Trying the program and looking for
        // ENOEXEC does not work: under qemu the spawn failure comes back as exit 127.)
        let host = Command::new("uname").arg("-m").output().expect("run `uname -m`");
        let host = String::from_utf8_lossy(&host.stdout).trim().to_owned();
        !host.is_empty() && host != "aarch64" && host != "arm64"
    });
    let Some(triple) = emulated else {
        return Command::new(exe).output().unwrap_or_else(|e| panic!("cannot run the C example {}: {e}", exe.display()));
    };
    let var = format!("CARGO_TARGET_{}_RUNNER", triple.to_uppercase().replace('-', "_"));
    let runner = std::env::var(&var).unwrap_or_else(|_| "qemu-aarch64 -L /usr/aarch64-linux-gnu".into());
    let mut words = runner.split_whitespace();
    let prog = words.next().unwrap_or_else(|| panic!("{var} is empty"));
    let _ = writeln!(std::io::stderr(), "note: the host cannot run the aarch64 C example; running it under `{runner}`");
    Command::new(prog)
        .args(words)
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C example under `{runner}`: {e}"))
}

/// Compiles the C program `source` (relative to the crate root) with [`c_compiler`] and
/// the given link arguments, runs it, checks that it succeeded with nothing on stderr,
/// and returns its stdout. `-ffp-contract=off`: the programs compare float results bit
/// for bit with their own loops, which a fused multiply-add would round differently.
fn build_and_run_c(source: &str, out_name: &str, link: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = profile_dir().join("c-example");
    std::fs::create_dir_all(&out_dir).expect("create the output dir");
    let exe = out_dir.join(out_name);
    let cc = c_compiler();
    let output = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1", "-ffp-contract=off"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join(source))
        .args(link)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        output.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = run_program(&exe);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    print!("{stdout}");
    assert!(run.status.success(), "{source} failed ({}):\n{stdout}\n{stderr}", run.status);
    assert!(stderr.is_empty(), "unexpected stderr: {stderr}");
    stdout
}

/// Compiles examples/c/qkern_example.c with [`c_compiler`] and the given link arguments,
/// runs it and checks its output.
fn build_and_run_example(out_name: &str, link: &[&str]) {
    let stdout = build_and_run_c("examples/c/qkern_example.c", out_name, link);
    assert!(stdout.contains(&format!("qkern {}", env!("CARGO_PKG_VERSION"))), "{stdout}");
    assert!(stdout.contains("expected error 1: qk_gemm_i32: null pointer: `weights`"), "{stdout}");
    assert!(stdout.contains("matmul_integer: Y[0][0..3] = "), "{stdout}");
    assert!(stdout.contains("expected error 8: qk_quantize_multiplier:"), "{stdout}");
    assert!(stdout.contains("expected error 5: qk_gemm_weights_create:"), "{stdout}");
    assert!(stdout.contains("codebook: C[0][0..3] = "), "{stdout}");
    assert!(stdout.trim_end().ends_with("qkern_example: all checks passed"), "{stdout}");
}

/// Compiles and runs tests/c/nonuniform.c: the codebook, PWLQ, thread and info entry
/// points against results the program computes itself.
fn build_and_run_nonuniform(out_name: &str, link: &[&str]) {
    let stdout = build_and_run_c("tests/c/nonuniform.c", out_name, link);
    assert!(stdout.contains("info: isa: "), "{stdout}");
    assert!(stdout.contains("expected error 8: qk_codebook_weights_create: invalid parameter: `codes`"), "{stdout}");
    assert!(stdout.contains("expected error 9: qk_codebook_weights_create: unsupported:"), "{stdout}");
    assert!(stdout.contains("expected error 8: qk_pwlq_quantize:"), "{stdout}");
    assert!(stdout.contains("pwlq4: C[0][0..2] = "), "{stdout}");
    assert!(stdout.contains("pwlq grid: "), "{stdout}");
    assert!(stdout.contains("expected error 2: qk_pwlq_bias_correction: shape mismatch: `input_mean`"), "{stdout}");
    assert!(stdout.trim_end().ends_with("nonuniform: all checks passed"), "{stdout}");
}

// ---------------------------------------------------------------------------------------
// The C program

#[test]
fn c_example_against_the_static_library() {
    let lib = library("libqkern.a");
    build_and_run_example("qkern_example_static", &[lib.to_str().expect("UTF-8 path")]);
}

#[test]
fn c_nonuniform_program_against_the_static_library() {
    let lib = library("libqkern.a");
    build_and_run_nonuniform("nonuniform_static", &[lib.to_str().expect("UTF-8 path")]);
}

#[cfg(target_os = "linux")]
#[test]
fn c_nonuniform_program_against_the_shared_library() {
    let lib = library("libqkern.so");
    let dir = lib.parent().expect("lib dir").to_str().expect("UTF-8 path").to_owned();
    build_and_run_nonuniform("nonuniform_shared", &[lib.to_str().expect("UTF-8 path"), &format!("-Wl,-rpath,{dir}")]);
}

#[cfg(target_os = "linux")]
#[test]
fn c_example_against_the_shared_library() {
    let lib = library("libqkern.so");
    let dir = lib.parent().expect("lib dir").to_str().expect("UTF-8 path").to_owned();
    // Link that exact file (deps/ also holds other libqkern* files), found at run time
    // through the rpath.
    build_and_run_example("qkern_example_shared", &[lib.to_str().expect("UTF-8 path"), &format!("-Wl,-rpath,{dir}")]);
}

// ---------------------------------------------------------------------------------------
// Version and the error message

#[test]
fn version_is_the_crate_version() {
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(qk_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn last_error_is_empty_at_first_and_per_thread() {
    std::thread::spawn(|| {
        assert_eq!(last_error(), "");
        // SAFETY: testing the NULL check.
        let st = unsafe { qk_multiply_by_quantized_multiplier(1, 1 << 30, 0, QK_REQUANT_SINGLE_ROUNDING, null_mut()) };
        expect_err(st, QK_ERR_NULL_POINTER, "qk_multiply_by_quantized_multiplier", "`out`");
        // Another thread does not see this thread's message.
        std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
        assert!(!last_error().is_empty());
        // Reading the message or the version does not clear it.
        let _ = qk_version();
        assert!(last_error().contains("`out`"));
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// qk_quantize_multiplier / qk_multiply_by_quantized_multiplier

fn qmul(real: f64, mode: i32) -> (qk_status, i32, i32) {
    let (mut m, mut s) = (-7, -7);
    // SAFETY: two distinct valid out-pointers.
    let st = unsafe { qk_quantize_multiplier(real, mode, &mut m, &mut s) };
    (st, m, s)
}

fn mbqm(x: i32, m: i32, s: i32, mode: i32) -> (qk_status, i32) {
    let mut out = -7;
    // SAFETY: a valid out-pointer.
    let st = unsafe { qk_multiply_by_quantized_multiplier(x, m, s, mode, &mut out) };
    (st, out)
}

#[test]
fn quantize_multiplier_values() {
    const D: i32 = QK_REQUANT_TFLITE_DOUBLE_ROUNDING;
    const S: i32 = QK_REQUANT_SINGLE_ROUNDING;
    // real = multiplier · 2^(shift − 31), multiplier in [2^30, 2^31), by hand.
    for (real, mode, m, s) in [
        (0.5, D, 1 << 30, 0),
        (1.0, D, 1 << 30, 1),
        (0.25, S, 1 << 30, -1),
        (0.75, D, 1_610_612_736, 0),
        (0.0, D, 0, 0),
        (2f64.powi(-32), D, 1 << 30, -31),  // the smallest shift kept
        (2f64.powi(-33), D, 0, 0),          // below it: zero
        (1.0 - 2f64.powi(-40), D, 1 << 30, 1), // rounds up to 2^31: halved, shift + 1
        (2f64.powi(31), D, 1 << 30, 32),    // double rounding keeps the large shift
        (2f64.powi(31), S, i32::MAX, 30),   // single rounding caps it at 30
    ] {
        let (st, gm, gs) = qmul(real, mode);
        assert_eq!(st, QK_OK, "{real}: {}", last_error());
        assert_eq!((gm, gs), (m, s), "quantize_multiplier({real}, mode {mode})");
    }
}

#[test]
fn quantize_multiplier_bad_input() {
    const F: &str = "qk_quantize_multiplier";
    let mut m = 5;
    // SAFETY: NULL out-pointers are the error under test; the other is valid.
    let st = unsafe { qk_quantize_multiplier(0.5, QK_REQUANT_SINGLE_ROUNDING, null_mut(), &mut m) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`multiplier`");
    // SAFETY: as above.
    let st = unsafe { qk_quantize_multiplier(0.5, QK_REQUANT_SINGLE_ROUNDING, &mut m, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`shift`");
    assert_eq!(m, 5, "outputs are untouched on failure");
    // The same pointer for both outputs.
    // SAFETY: a valid pointer; the aliasing is the error under test and is refused
    // before any write.
    let st = unsafe { qk_quantize_multiplier(0.5, QK_REQUANT_SINGLE_ROUNDING, &mut m, &mut m as *mut i32) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "overlaps");
    // A misaligned pointer.
    let mut buf = [0i32; 2];
    let odd = (buf.as_mut_ptr() as *mut u8).wrapping_add(1) as *mut i32;
    // SAFETY: the misalignment is refused before any access.
    let st = unsafe { qk_quantize_multiplier(0.5, QK_REQUANT_SINGLE_ROUNDING, odd, &mut m) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "aligned");

    for mode in [3, -1, 42, i32::MIN, i32::MAX] {
        let (st, gm, gs) = qmul(0.5, mode);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "not a qk_requant_mode");
        assert_eq!((gm, gs), (-7, -7));
    }
    let (st, ..) = qmul(0.5, QK_REQUANT_FP32);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "Fp32");
    for real in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, -f64::MIN_POSITIVE] {
        let (st, gm, gs) = qmul(real, QK_REQUANT_TFLITE_DOUBLE_ROUNDING);
        expect_err(st, QK_ERR_SCALE, F, "real");
        assert_eq!((gm, gs), (-7, -7));
    }
}

#[test]
fn multiply_by_quantized_multiplier_values() {
    const D: i32 = QK_REQUANT_TFLITE_DOUBLE_ROUNDING;
    const S: i32 = QK_REQUANT_SINGLE_ROUNDING;
    let half = 1 << 30; // 0.5 in Q0.31
    // By hand: x · M · 2^(shift − 31).
    for (x, m, s, mode, want) in [
        (100, half, 0, D, 50),
        (100, half, 0, S, 50),
        (-6, half, -1, D, -2), // -1.5: RoundingDivideByPOT rounds ties away from zero
        (-6, half, -1, S, -1), // -1.5: single rounding rounds ties toward +inf
        (6, half, -1, D, 2),   // 1.5
        (6, half, -1, S, 2),
        (1000, half, 2, D, 2000),
        (i32::MIN, half, 0, D, -(1 << 30)),
        (i32::MAX, 0, 0, S, 0),
        (2, i32::MAX, 30, S, i32::MAX), // (2·(2^31 − 1) + 1) >> 1: just inside int32
        (-2, i32::MAX, 30, S, -i32::MAX),
    ] {
        let (st, got) = mbqm(x, m, s, mode);
        assert_eq!(st, QK_OK, "{}", last_error());
        assert_eq!(got, want, "({x}, {m}, {s}, mode {mode})");
    }
    // Against the safe Rust API over a sweep (including the overflowing inputs, which
    // must give the same error): the C entry point passes everything through unchanged.
    use qkern::requant as r;
    let xs = [0, 1, -1, 2, -2, 3, 5, -5, 127, -128, 255, 1000, -1000, 65_535, -65_536, 1 << 20, -(1 << 20), i32::MAX, i32::MIN];
    for real in [0.001, 0.1, 0.3, 0.5, 0.999, 1.0, 1.7, 3.0, 1e-9] {
        for (mode_c, mode) in [(D, RequantMode::TfliteDoubleRounding), (S, RequantMode::SingleRounding)] {
            let qm = r::quantize_multiplier(real, mode).unwrap();
            let (st, m, s) = qmul(real, mode_c);
            assert_eq!((st, m, s), (QK_OK, qm.multiplier, qm.shift));
            for &x in &xs {
                let (st, got) = mbqm(x, qm.multiplier, qm.shift, mode_c);
                match r::multiply_by_quantized_multiplier(x, qm, mode) {
                    Ok(want) => assert_eq!((st, got), (QK_OK, want), "x = {x}, real = {real}, {mode:?}: {}", last_error()),
                    Err(e) => {
                        assert_eq!(st, QK_ERR_OVERFLOW, "x = {x}, real = {real}, {mode:?}");
                        assert_eq!(last_error(), format!("qk_multiply_by_quantized_multiplier: {e}"));
                    }
                }
            }
        }
    }
}

#[test]
fn multiply_by_quantized_multiplier_bad_input() {
    const F: &str = "qk_multiply_by_quantized_multiplier";
    // SAFETY: NULL is the error under test.
    let st = unsafe { qk_multiply_by_quantized_multiplier(1, 1 << 30, 0, QK_REQUANT_SINGLE_ROUNDING, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
    for mode in [3, -1, i32::MIN, i32::MAX] {
        let (st, out) = mbqm(1, 1 << 30, 0, mode);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "not a qk_requant_mode");
        assert_eq!(out, -7);
    }
    let (st, _) = mbqm(1, 1 << 30, 0, QK_REQUANT_FP32);
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "Fp32");
    // The multiplier is 0 or a normalised Q0.31 mantissa in [2^30, 2^31).
    for m in [-1, 1, (1 << 30) - 1, i32::MIN] {
        let (st, _) = mbqm(1, m, 0, QK_REQUANT_SINGLE_ROUNDING);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "multiplier");
    }
    for (shift, mode) in [
        (31, QK_REQUANT_SINGLE_ROUNDING),
        (32, QK_REQUANT_TFLITE_DOUBLE_ROUNDING),
        (-32, QK_REQUANT_TFLITE_DOUBLE_ROUNDING),
        (-32, QK_REQUANT_SINGLE_ROUNDING),
        (i32::MAX, QK_REQUANT_TFLITE_DOUBLE_ROUNDING),
        (i32::MIN, QK_REQUANT_SINGLE_ROUNDING),
    ] {
        let (st, _) = mbqm(1, 1 << 30, shift, mode);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "shift");
    }
    // Where TFLite's int32 arithmetic would overflow: an error, not a wrapped or clamped
    // value.
    for mode in [QK_REQUANT_TFLITE_DOUBLE_ROUNDING, QK_REQUANT_SINGLE_ROUNDING] {
        let (st, out) = mbqm(i32::MAX, i32::MAX, 30, mode);
        expect_err(st, QK_ERR_OVERFLOW, F, "overflow");
        assert_eq!(out, -7);
        let (st, _) = mbqm(8, i32::MAX, 30, mode);
        expect_err(st, QK_ERR_OVERFLOW, F, "overflow");
    }
}

// ---------------------------------------------------------------------------------------
// qk_requantize

#[allow(clippy::too_many_arguments)]
fn requantize_c(acc: &[i32], rows: usize, cols: usize, scale: &[f32], mode: i32, zp: i32, lo: i32, hi: i32, dtype: i32) -> (qk_status, Vec<u8>) {
    let mut out = vec![0xa5u8; acc.len()];
    // SAFETY: every buffer is live and sized as passed; `out` is distinct from the inputs.
    let st = unsafe {
        qk_requantize(acc.as_ptr(), rows, cols, scale.as_ptr(), scale.len(), mode, zp, lo, hi, out.as_mut_ptr().cast(), dtype, out.len())
    };
    (st, out)
}

#[test]
fn requantize_values_per_tensor_and_per_column_every_mode() {
    let (rows, cols) = (3usize, 5usize);
    let acc: Vec<i32> = vec![0, 1, -1, 2, -2, 3, -3, 100, -100, 1 << 20, -(1 << 20), i32::MAX, i32::MIN, 77_777, -12_345];
    let scales: Vec<f32> = vec![0.5, 0.0117, 1.0 / 3.0, 2.0e-6, 0.25];
    for dtype in [QK_U8, QK_I8] {
        let (tmin, tmax) = if dtype == QK_U8 { (0i64, 255i64) } else { (-128, 127) };
        for (zp, lo, hi) in [(if dtype == QK_U8 { 128 } else { 0 }, i32::MIN, i32::MAX), (10, 10, 60)] {
            for mode in [QK_REQUANT_FP32, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, QK_REQUANT_SINGLE_ROUNDING] {
                for per_column in [false, true] {
                    let sc: &[f32] = if per_column { &scales } else { &scales[1..2] };
                    let (st, out) = requantize_c(&acc, rows, cols, sc, mode, zp, lo, hi, dtype);
                    expect_ok(st);
                    for (i, (&a, &o)) in acc.iter().zip(&out).enumerate() {
                        let s = sc[if per_column { i % cols } else { 0 }];
                        // Independent of qk_requantize: ONNX's float formula, or the
                        // fixed-point pair of C entry points.
                        let v = if mode == QK_REQUANT_FP32 {
                            ((a as f32) * s).round_ties_even() as i64
                        } else {
                            let (st, m, sh) = qmul(s as f64, mode);
                            expect_ok(st);
                            let (st, v) = mbqm(a, m, sh, mode);
                            if st == QK_ERR_OVERFLOW {
                                continue; // beyond TFLite's int32 arithmetic: saturates below
                            }
                            expect_ok(st);
                            v as i64
                        };
                        let want = (v + zp as i64).clamp(lo as i64, hi as i64).clamp(tmin, tmax);
                        let got = if dtype == QK_U8 { o as i64 } else { o as i8 as i64 };
                        assert_eq!(got, want, "acc {a}, scale {s}, mode {mode}, zp {zp}, clamp [{lo}, {hi}], dtype {dtype}");
                    }
                }
            }
        }
    }
}

#[test]
fn requantize_bad_input() {
    const F: &str = "qk_requantize";
    let acc = [1i32, 2, 3, 4, 5, 6];
    let s = [0.5f32];
    let mut out = [0u8; 6];
    let call = |acc: *const i32, rows, cols, sc: &[f32], sc_ptr: *const f32, zp, lo, hi, out: *mut u8, dtype, n| {
        // SAFETY: the buffers are the arrays above (or NULL, the error under test), sized
        // as passed.
        unsafe { qk_requantize(acc, rows, cols, sc_ptr, sc.len(), QK_REQUANT_FP32, zp, lo, hi, out.cast(), dtype, n) }
    };
    let o = out.as_mut_ptr();
    expect_err(call(null(), 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_NULL_POINTER, F, "`acc`");
    expect_err(call(acc.as_ptr(), 2, 3, &s, null(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_NULL_POINTER, F, "`scale`");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, null_mut(), QK_U8, 6), QK_ERR_NULL_POINTER, F, "`out`");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_I32, 6), QK_ERR_UNSUPPORTED, F, "QK_U8 or QK_I8");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, 99, 6), QK_ERR_INVALID_PARAMETER, F, "qk_dtype");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 5), QK_ERR_SHAPE, F, "`out` has 5");
    expect_err(call(acc.as_ptr(), usize::MAX, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_OVERFLOW, F, "overflows");
    let two = [0.5f32, 0.25];
    expect_err(call(acc.as_ptr(), 2, 3, &two, two.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_SHAPE, F, "per column");
    expect_err(call(acc.as_ptr(), 2, 3, &[], s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_SHAPE, F, "per column");
    for bad in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
        let b = [bad];
        expect_err(call(acc.as_ptr(), 2, 3, &b, b.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_SCALE, F, "scale");
    }
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 300, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_ZERO_POINT, F, "zero_point");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), -1, i32::MIN, i32::MAX, o, QK_U8, 6), QK_ERR_ZERO_POINT, F, "zero_point");
    let three = [0.5f32, 0.25, 0.125];
    expect_err(call(acc.as_ptr(), 2, 3, &three, three.as_ptr(), 200, i32::MIN, i32::MAX, o, QK_I8, 6), QK_ERR_ZERO_POINT, F, "zero_point");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, 5, 4, o, QK_U8, 6), QK_ERR_INVALID_PARAMETER, F, "clamp");
    expect_err(call(acc.as_ptr(), 2, 3, &s, s.as_ptr(), 0, 300, 400, o, QK_U8, 6), QK_ERR_INVALID_PARAMETER, F, "does not intersect");
    // `out` over `acc`'s bytes.
    let mut both = [0i32; 6];
    let p = both.as_mut_ptr();
    expect_err(call(p, 2, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, p.cast(), QK_U8, 6), QK_ERR_INVALID_PARAMETER, F, "overlaps");
    // Nothing was written on any error; an empty matrix is fine.
    assert_eq!(out, [0u8; 6]);
    expect_ok(call(acc.as_ptr(), 0, 3, &s, s.as_ptr(), 0, i32::MIN, i32::MAX, o, QK_U8, 0));
}

// ---------------------------------------------------------------------------------------
// Prepacked GEMM

const K: usize = 7;
const N: usize = 5;
const M: usize = 3;

fn b_i8() -> Vec<i8> {
    (0..K * N).map(|i| ((i * 37 + 11) % 256) as u8 as i8).collect()
}
fn a_u8() -> Vec<u8> {
    (0..M * K).map(|i| ((i * 53 + 7) % 256) as u8).collect()
}

/// Owns a handle; frees it on drop.
struct Weights(*mut qk_gemm_weights);
impl Drop for Weights {
    fn drop(&mut self) {
        // SAFETY: a live handle from qk_gemm_weights_create, freed once.
        assert_eq!(unsafe { qk_gemm_weights_free(self.0) }, QK_OK);
    }
}

fn create(b: &[i8], dtype: i32, k: usize, n: usize, ldb: usize, zp: &[i32], scale: &[f32]) -> (qk_status, *mut qk_gemm_weights) {
    let mut out = 0x10 as *mut qk_gemm_weights; // a non-NULL sentinel, never dereferenced
    let scale_ptr = if scale.is_empty() { null() } else { scale.as_ptr() };
    // SAFETY: the slices are valid for their lengths; `out` is writable.
    let st = unsafe {
        qk_gemm_weights_create(b.as_ptr().cast(), dtype, b.len(), k, n, ldb, zp.as_ptr(), zp.len(), scale_ptr, scale.len(), &mut out)
    };
    if st != QK_OK {
        assert!(out.is_null(), "the handle is NULL after a failure");
    }
    (st, out)
}

fn weights(zp: &[i32], scale: &[f32]) -> Weights {
    let (st, w) = create(&b_i8(), QK_I8, K, N, N, zp, scale);
    assert_eq!(st, QK_OK, "{}", last_error());
    assert!(!w.is_null());
    Weights(w)
}

/// The exact GEMM, in i64, from the definition.
fn oracle(a: &[u8], za: i32, b: &[i8], zb: &[i32], bias: Option<&[i32]>, m: usize) -> Vec<i64> {
    let mut c = vec![0i64; m * N];
    for i in 0..m {
        for j in 0..N {
            let mut acc = bias.map_or(0, |b| b[j] as i64);
            for p in 0..K {
                acc += (a[i * K + p] as i64 - za as i64) * (b[p * N + j] as i64 - zb[j] as i64);
            }
            c[i * N + j] = acc;
        }
    }
    c
}

#[allow(clippy::too_many_arguments)]
fn gemm_i32(w: *const qk_gemm_weights, a: &[u8], dtype: i32, m: usize, lda: usize, za: i32, bias: Option<&[i32]>, c: &mut [i32], ldc: usize) -> qk_status {
    let (bp, bn) = bias.map_or((null(), 0), |b| (b.as_ptr(), b.len()));
    // SAFETY: every slice is valid for its length and distinct.
    unsafe { qk_gemm_i32(w, a.as_ptr().cast(), dtype, a.len(), m, lda, za, bp, bn, c.as_mut_ptr(), c.len(), ldc) }
}

#[test]
fn gemm_i32_matches_the_definition() {
    let zb = [0, 1, -2, 127, -128];
    let w = weights(&zb, &[]);
    let a = a_u8();
    let bias = [5, -6, 1 << 20, -(1 << 20), 0];
    for (za, bias) in [(0, None), (128, Some(&bias[..])), (255, Some(&bias[..]))] {
        let mut c = vec![0i32; M * N];
        expect_ok(gemm_i32(w.0, &a, QK_U8, M, K, za, bias, &mut c, N));
        let want: Vec<i32> = oracle(&a, za, &b_i8(), &zb, bias, M).into_iter().map(|v| v as i32).collect();
        assert_eq!(c, want, "za = {za}");
    }
    // i8 activations are the same bytes reinterpreted; per-tensor zero point.
    let w1 = weights(&[3], &[]);
    let a_i8: Vec<i8> = a.iter().map(|&v| v as i8).collect();
    let mut c = vec![0i32; M * N];
    // SAFETY: valid slices.
    let st = unsafe { qk_gemm_i32(w1.0, a_i8.as_ptr().cast(), QK_I8, a_i8.len(), M, K, -5, null(), 0, c.as_mut_ptr(), c.len(), N) };
    expect_ok(st);
    for i in 0..M {
        for j in 0..N {
            let want: i32 = (0..K).map(|p| (a_i8[i * K + p] as i32 + 5) * (b_i8()[p * N + j] as i32 - 3)).sum();
            assert_eq!(c[i * N + j], want);
        }
    }
    // Strided A and C: padding columns are neither read into the result nor written.
    let lda = K + 3;
    let ldc = N + 2;
    let mut a_pad = vec![0xEEu8; (M - 1) * lda + K];
    for i in 0..M {
        a_pad[i * lda..i * lda + K].copy_from_slice(&a[i * K..(i + 1) * K]);
    }
    let mut c = vec![i32::MIN; (M - 1) * ldc + N];
    expect_ok(gemm_i32(w.0, &a_pad, QK_U8, M, lda, 128, None, &mut c, ldc));
    let want = oracle(&a, 128, &b_i8(), &zb, None, M);
    for i in 0..M {
        for j in 0..ldc {
            if i * ldc + j >= c.len() {
                break;
            }
            if j < N {
                assert_eq!(c[i * ldc + j] as i64, want[i * N + j]);
            } else {
                assert_eq!(c[i * ldc + j], i32::MIN, "padding written at ({i}, {j})");
            }
        }
    }
}

#[test]
fn gemm_shape_query() {
    let w = weights(&[0], &[1.0]);
    let (mut k, mut n, mut d) = (0usize, 0usize, 0i32);
    // SAFETY: valid handle and out-pointers.
    expect_ok(unsafe { qk_gemm_weights_shape(w.0, &mut k, &mut n, &mut d) });
    assert_eq!((k, n, d), (K, N, QK_I8));
    // SAFETY: NULL is the error under test.
    let st = unsafe { qk_gemm_weights_shape(null(), &mut k, &mut n, &mut d) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_gemm_weights_shape", "`weights`");
    // SAFETY: as above.
    let st = unsafe { qk_gemm_weights_shape(w.0, &mut k, null_mut(), &mut d) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_gemm_weights_shape", "`n`");
}

#[test]
fn gemm_f32_and_requantize_match_the_rust_api() {
    let zb = [0, 1, -2, 7, -9];
    let sb = [0.5f32, 0.25, 0.125, 0.0625, 0.03125];
    let w = weights(&zb, &sb);
    let b = b_i8();
    let packed = PackedWeights::new(MatrixRef::new(&b, K, N), WeightQuant::per_column(&zb, &sb)).unwrap();
    let a = a_u8();
    let (za, sa) = (100u8, 0.02f32);
    let bias = [1000, -1000, 0, 7, 123_456];

    // f32 output, f32 bias.
    let fbias = [0.5f32, -0.25, 0.0, 1e3, -7.0];
    let mut c = vec![0f32; M * N];
    // SAFETY: valid slices.
    let st = unsafe {
        qk_gemm_f32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, za as i32, sa, fbias.as_ptr(), N, c.as_mut_ptr(), c.len(), N)
    };
    expect_ok(st);
    let mut want = vec![0f32; M * N];
    qkern::gemm::gemm_f32(Activations::new(MatrixRef::new(&a, M, K), za, sa), &packed, Some(&fbias), MatrixMut::new(&mut want, M, N)).unwrap();
    assert_eq!(c.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());

    // Requantized, every mode, both output types, with a clamp.
    for (mode_c, mode) in [
        (QK_REQUANT_FP32, RequantMode::Fp32),
        (QK_REQUANT_TFLITE_DOUBLE_ROUNDING, RequantMode::TfliteDoubleRounding),
        (QK_REQUANT_SINGLE_ROUNDING, RequantMode::SingleRounding),
    ] {
        let (so, zo) = (0.37f32, 3);
        let mut q = vec![0u8; M * N];
        // SAFETY: valid slices.
        let st = unsafe {
            qk_gemm_requantize(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, za as i32, sa, bias.as_ptr(), N, so, zo, mode_c, 10, 250, q.as_mut_ptr().cast(), QK_U8, q.len(), N)
        };
        expect_ok(st);
        let mut want = vec![0u8; M * N];
        let rq = Requantize::new(so, zo as u8).mode(mode).bias(&bias).clamp(10, 250);
        qkern::gemm::gemm_requantize(Activations::new(MatrixRef::new(&a, M, K), za, sa), &packed, &rq, MatrixMut::new(&mut want, M, N)).unwrap();
        assert_eq!(q, want, "{mode:?} u8");
        assert!(q.iter().all(|&v| (10..=250).contains(&v)));

        let mut q = vec![0i8; M * N];
        // SAFETY: valid slices.
        let st = unsafe {
            qk_gemm_requantize(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, za as i32, sa, null(), 0, so, -zo, mode_c, -128, 127, q.as_mut_ptr().cast(), QK_I8, q.len(), N)
        };
        expect_ok(st);
        let mut want = vec![0i8; M * N];
        let rq = Requantize::new(so, -zo as i8).mode(mode);
        qkern::gemm::gemm_requantize(Activations::new(MatrixRef::new(&a, M, K), za, sa), &packed, &rq, MatrixMut::new(&mut want, M, N)).unwrap();
        assert_eq!(q, want, "{mode:?} i8");
    }
}

#[test]
fn gemm_zero_and_degenerate_sizes() {
    let w = weights(&[0], &[]);
    let a = a_u8();
    // m = 0: nothing to do, nothing written; the buffers must still be non-NULL.
    let mut c = [i32::MIN; 1];
    expect_ok(gemm_i32(w.0, &a[..0], QK_U8, 0, K, 0, None, &mut c[..0], N));
    // SAFETY: NULL is the error under test.
    let st = unsafe { qk_gemm_i32(w.0, null(), QK_U8, 0, 0, K, 0, null(), 0, c.as_mut_ptr(), 0, N) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_gemm_i32", "`a`");

    // K = 0: C = bias.
    let (st, w0) = create(&[], QK_I8, 0, N, N, &[0], &[]);
    assert_eq!(st, QK_OK, "{}", last_error());
    let w0 = Weights(w0);
    let bias = [1, 2, 3, 4, 5];
    let mut c = vec![-1i32; 2 * N];
    expect_ok(gemm_i32(w0.0, &[0u8; 0], QK_U8, 2, 0, 0, Some(&bias), &mut c, N));
    assert_eq!(c, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);

    // N = 0.
    let (st, wn) = create(&[], QK_I8, K, 0, 0, &[0], &[]);
    assert_eq!(st, QK_OK, "{}", last_error());
    let wn = Weights(wn);
    let mut c = [0i32; 1];
    expect_ok(gemm_i32(wn.0, &a, QK_U8, M, K, 0, None, &mut c[..0], 0));
}

#[test]
fn gemm_weights_create_bad_input() {
    const F: &str = "qk_gemm_weights_create";
    let b = b_i8();
    let mut out = null_mut();
    // NULLs.
    // SAFETY: NULL `b` is the error under test; the rest is valid.
    let st = unsafe { qk_gemm_weights_create(null(), QK_I8, b.len(), K, N, N, [0].as_ptr(), 1, null(), 0, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`b`");
    // SAFETY: as above, for `zero_point`.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, b.len(), K, N, N, null(), 1, null(), 0, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`zero_point`");
    // SAFETY: as above, for `out`.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, b.len(), K, N, N, [0].as_ptr(), 1, null(), 0, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
    // SAFETY: NULL `scale` with a non-zero count.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, b.len(), K, N, N, [0].as_ptr(), 1, null(), N, &mut out) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`scale`");

    // Dtypes: unknown values are invalid, known ones the GEMM does not take unsupported.
    for d in [0, 7, 99, -1, i32::MIN, i32::MAX] {
        let (st, _) = create(&b, d, K, N, N, &[0], &[]);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "not a qk_dtype");
    }
    for d in [QK_F32, QK_U16, QK_I16, QK_I32, QK_INT4, QK_UINT4] {
        let (st, _) = create(&b, d, K, N, N, &[0], &[]);
        expect_err(st, QK_ERR_UNSUPPORTED, F, "`b_dtype`");
    }
    // Shapes, strides, sizes.
    let (st, _) = create(&b, QK_I8, K, N, N, &[0, 0, 0], &[]);
    expect_err(st, QK_ERR_SHAPE, F, "`zero_point` has 3 values");
    let (st, _) = create(&b, QK_I8, K, N, N, &[0], &[1.0, 1.0]);
    expect_err(st, QK_ERR_SHAPE, F, "`scale` has 2 values");
    let (st, _) = create(&b, QK_I8, K, N, N, &[], &[]);
    expect_err(st, QK_ERR_SHAPE, F, "`zero_point` has 0 values");
    let (st, _) = create(&b, QK_I8, K, N, N - 1, &[0], &[]);
    expect_err(st, QK_ERR_INVALID_STRIDE, F, "stride");
    let (st, _) = create(&b[..b.len() - 1], QK_I8, K, N, N, &[0], &[]);
    expect_err(st, QK_ERR_BUFFER_TOO_SMALL, F, "needs 35");
    let (st, _) = create(&b, QK_I8, K + 1, N, N, &[0], &[]);
    expect_err(st, QK_ERR_BUFFER_TOO_SMALL, F, "needs 40");
    // Huge sizes: the extent overflows size_t, or the count exceeds the address space.
    let (st, _) = create(&b, QK_I8, usize::MAX / 2, N, N, &[0], &[]);
    expect_err(st, QK_ERR_OVERFLOW, F, "overflow size_t");
    let (st, _) = create(&b, QK_I8, 2, usize::MAX, usize::MAX, &[0], &[]);
    expect_err(st, QK_ERR_OVERFLOW, F, "overflow size_t");
    // SAFETY: the oversized count is refused before a slice is made.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, usize::MAX, K, N, N, [0].as_ptr(), 1, null(), 0, &mut out) };
    expect_err(st, QK_ERR_OVERFLOW, F, "address space");
    // SAFETY: as above, for a 4-byte element type.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, b.len(), K, N, N, [0].as_ptr(), usize::MAX / 2, null(), 0, &mut out) };
    expect_err(st, QK_ERR_OVERFLOW, F, "`zero_point`");
    // Values.
    let (st, _) = create(&b, QK_I8, K, N, N, &[128], &[]);
    expect_err(st, QK_ERR_ZERO_POINT, F, "128");
    let (st, _) = create(&b, QK_U8, K, N, N, &[-1], &[]);
    expect_err(st, QK_ERR_ZERO_POINT, F, "-1");
    for s in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let (st, _) = create(&b, QK_I8, K, N, N, &[0], &[s]);
        expect_err(st, QK_ERR_SCALE, F, "scale");
    }
    // A misaligned zero_point pointer.
    let zp = [0i32; 2];
    let odd = (zp.as_ptr() as *const u8).wrapping_add(2) as *const i32;
    // SAFETY: refused before any read.
    let st = unsafe { qk_gemm_weights_create(b.as_ptr().cast(), QK_I8, b.len(), K, N, N, odd, 1, null(), 0, &mut out) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "aligned");
}

#[test]
fn gemm_run_bad_input() {
    const F: &str = "qk_gemm_i32";
    let w = weights(&[0], &[]);
    let a = a_u8();
    let mut c = vec![0i32; M * N];
    let bias = [0i32; N];

    // NULLs.
    expect_err(gemm_i32(null(), &a, QK_U8, M, K, 0, None, &mut c, N), QK_ERR_NULL_POINTER, F, "`weights`");
    let odd = (w.0 as *const u8).wrapping_add(1).cast::<qk_gemm_weights>();
    expect_err(gemm_i32(odd, &a, QK_U8, M, K, 0, None, &mut c, N), QK_ERR_INVALID_PARAMETER, F, "`weights` is misaligned");
    // SAFETY: NULL `a`.
    let st = unsafe { qk_gemm_i32(w.0, null(), QK_U8, a.len(), M, K, 0, null(), 0, c.as_mut_ptr(), c.len(), N) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`a`");
    // SAFETY: NULL `c`.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, null(), 0, null_mut(), c.len(), N) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`c`");
    // SAFETY: NULL `bias` with a count.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, null(), N, c.as_mut_ptr(), c.len(), N) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`bias`");

    // Dtypes.
    for d in [0, 8, -3, i32::MAX] {
        expect_err(gemm_i32(w.0, &a, d, M, K, 0, None, &mut c, N), QK_ERR_INVALID_PARAMETER, F, "`a_dtype`");
    }
    expect_err(gemm_i32(w.0, &a, QK_F32, M, K, 0, None, &mut c, N), QK_ERR_UNSUPPORTED, F, "`a_dtype`");

    // Shapes.
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K - 1, 0, None, &mut c, N), QK_ERR_INVALID_STRIDE, F, "`a`");
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K, 0, None, &mut c, N - 1), QK_ERR_INVALID_STRIDE, F, "`c`");
    expect_err(gemm_i32(w.0, &a, QK_U8, M + 1, K, 0, None, &mut c, N), QK_ERR_BUFFER_TOO_SMALL, F, "`a`");
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K, 0, None, &mut c[..M * N - 1], N), QK_ERR_BUFFER_TOO_SMALL, F, "`c`");
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K, 0, Some(&bias[..N - 1]), &mut c, N), QK_ERR_SHAPE, F, "bias");
    expect_err(gemm_i32(w.0, &a, QK_U8, usize::MAX, K, 0, None, &mut c, N), QK_ERR_OVERFLOW, F, "overflow size_t");
    expect_err(gemm_i32(w.0, &a, QK_U8, 2, usize::MAX, 0, None, &mut c, N), QK_ERR_OVERFLOW, F, "overflow size_t");
    // SAFETY: the oversized counts are refused before any slice is made.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, usize::MAX, M, K, 0, null(), 0, c.as_mut_ptr(), c.len(), N) };
    expect_err(st, QK_ERR_OVERFLOW, F, "`a`");
    // SAFETY: as above.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, null(), 0, c.as_mut_ptr(), usize::MAX / 4 + 1, N) };
    expect_err(st, QK_ERR_OVERFLOW, F, "`c`");

    // Zero points.
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K, 256, None, &mut c, N), QK_ERR_ZERO_POINT, F, "a_zero_point");
    expect_err(gemm_i32(w.0, &a, QK_I8, M, K, 128, None, &mut c, N), QK_ERR_ZERO_POINT, F, "a_zero_point");
    expect_err(gemm_i32(w.0, &a, QK_U8, M, K, -1, None, &mut c, N), QK_ERR_ZERO_POINT, F, "a_zero_point");

    // The output overlapping an input.
    let mut buf = vec![0i32; M * N + 8];
    let (bp, cp) = (buf.as_ptr(), buf.as_mut_ptr());
    // SAFETY: `a` and `c` overlap on purpose; refused before any slice is made.
    let st = unsafe { qk_gemm_i32(w.0, bp.cast(), QK_U8, M * K, M, K, 0, null(), 0, cp, M * N, N) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`c` overlaps `a`");
    // SAFETY: `bias` and `c` overlap on purpose.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, bp.wrapping_add(3), N, cp, M * N, N) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`c` overlaps `bias`");
    // A misaligned `c`.
    let odd = (cp as *mut u8).wrapping_add(1) as *mut i32;
    // SAFETY: refused before any access.
    let st = unsafe { qk_gemm_i32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, null(), 0, odd, M * N, N) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "aligned");
    assert!(buf.iter().all(|&v| v == 0), "nothing written on failure");
    assert!(c.iter().all(|&v| v == 0), "nothing written on failure");
}

#[test]
fn gemm_f32_and_requantize_bad_input() {
    let no_scale = weights(&[0], &[]);
    let w = weights(&[0], &[0.5]);
    let a = a_u8();
    let mut cf = vec![0f32; M * N];
    let mut q = vec![0u8; M * N];
    let f32_call = |w: *const qk_gemm_weights, sa: f32, cf: &mut [f32]| {
        // SAFETY: valid slices.
        unsafe { qk_gemm_f32(w, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, sa, null(), 0, cf.as_mut_ptr(), cf.len(), N) }
    };
    expect_err(f32_call(no_scale.0, 1.0, &mut cf), QK_ERR_INVALID_PARAMETER, "qk_gemm_f32", "weight scales");
    for sa in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        expect_err(f32_call(w.0, sa, &mut cf), QK_ERR_SCALE, "qk_gemm_f32", "activation scale");
    }
    // SAFETY: NULL `bias` with a count.
    let st = unsafe { qk_gemm_f32(w.0, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, 1.0, null(), 1, cf.as_mut_ptr(), cf.len(), N) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_gemm_f32", "`bias`");

    const F: &str = "qk_gemm_requantize";
    #[allow(clippy::too_many_arguments)]
    fn rq(w: *const qk_gemm_weights, a: &[u8], sa: f32, so: f32, zo: i32, mode: i32, lo: i32, hi: i32, q: &mut [u8], c_dtype: i32) -> qk_status {
        // SAFETY: valid slices.
        unsafe { qk_gemm_requantize(w, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, sa, null(), 0, so, zo, mode, lo, hi, q.as_mut_ptr().cast(), c_dtype, q.len(), N) }
    }
    expect_ok(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8));
    expect_err(rq(no_scale.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8), QK_ERR_INVALID_PARAMETER, F, "weight scales");
    for mode in [3, -1, i32::MIN] {
        expect_err(rq(w.0, &a, 1.0, 1.0, 0, mode, 0, 255, &mut q, QK_U8), QK_ERR_INVALID_PARAMETER, F, "`mode`");
    }
    for d in [0, 4242] {
        expect_err(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 0, 255, &mut q, d), QK_ERR_INVALID_PARAMETER, F, "`c_dtype`");
    }
    expect_err(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_I32), QK_ERR_UNSUPPORTED, F, "`c_dtype`");
    expect_err(rq(w.0, &a, 1.0, 1.0, 256, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8), QK_ERR_ZERO_POINT, F, "out_zero_point");
    expect_err(rq(w.0, &a, 1.0, 1.0, -129, QK_REQUANT_FP32, -128, 127, &mut q, QK_I8), QK_ERR_ZERO_POINT, F, "out_zero_point");
    expect_err(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, -1, 255, &mut q, QK_U8), QK_ERR_INVALID_PARAMETER, F, "`out_min`");
    expect_err(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 0, 256, &mut q, QK_U8), QK_ERR_INVALID_PARAMETER, F, "`out_max`");
    expect_err(rq(w.0, &a, 1.0, 1.0, 0, QK_REQUANT_FP32, 200, 100, &mut q, QK_U8), QK_ERR_INVALID_PARAMETER, F, "greater than");
    for s in [0.0, -2.0, f32::NAN, f32::NEG_INFINITY] {
        expect_err(rq(w.0, &a, 1.0, s, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8), QK_ERR_SCALE, F, "output scale");
        expect_err(rq(w.0, &a, s, 1.0, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8), QK_ERR_SCALE, F, "activation scale");
    }
    // A multiplier sa·sb/so that overflows f32 is refused, not saturated silently.
    expect_err(rq(w.0, &a, 1e30, 1e-30, 0, QK_REQUANT_FP32, 0, 255, &mut q, QK_U8), QK_ERR_SCALE, F, "multiplier");
    // The output overlapping the input (u8 in, u8 out: the in-place mistake).
    let mut buf = a.clone();
    let p = buf.as_mut_ptr();
    // SAFETY: `a` and `c` overlap on purpose; refused before any slice is made.
    let st = unsafe { qk_gemm_requantize(w.0, p.cast_const().cast(), QK_U8, M * K, M, K, 0, 1.0, null(), 0, 1.0, 0, QK_REQUANT_FP32, 0, 255, p.cast(), QK_U8, M * N, N) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`c` overlaps `a`");
    assert_eq!(buf, a, "nothing written on failure");
}

#[test]
fn gemm_weights_free_null_is_ok_and_handles_are_shareable() {
    // SAFETY: NULL is documented as a no-op.
    expect_ok(unsafe { qk_gemm_weights_free(null_mut()) });
    let zb = [0, 1, 2, 3, 4];
    let w = weights(&zb, &[]);
    let handle = w.0 as usize; // handles are immutable, so sharing across threads is allowed
    let want: Vec<i32> = oracle(&a_u8(), 9, &b_i8(), &zb, None, M).into_iter().map(|v| v as i32).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let want = &want;
            s.spawn(move || {
                for _ in 0..50 {
                    let mut c = vec![0i32; M * N];
                    expect_ok(gemm_i32(handle as *const qk_gemm_weights, &a_u8(), QK_U8, M, K, 9, None, &mut c, N));
                    assert_eq!(&c, want);
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// ONNX operators: the conformance cases replayed through the C entry points

mod conformance {
    use super::*;
    use serde_json::Value;
    use std::ffi::c_void;

    /// An array loaded from .npy, in its element type (4-bit types: unpacked, as stored).
    pub enum Buf {
        U8(Vec<u8>),
        I8(Vec<i8>),
        U16(Vec<u16>),
        I16(Vec<i16>),
        I32(Vec<i32>),
        F32(Vec<f32>),
    }

    impl Buf {
        pub fn ptr(&self) -> *const c_void {
            match self {
                Buf::U8(v) => v.as_ptr().cast(),
                Buf::I8(v) => v.as_ptr().cast(),
                Buf::U16(v) => v.as_ptr().cast(),
                Buf::I16(v) => v.as_ptr().cast(),
                Buf::I32(v) => v.as_ptr().cast(),
                Buf::F32(v) => v.as_ptr().cast(),
            }
        }
        pub fn len(&self) -> usize {
            match self {
                Buf::U8(v) => v.len(),
                Buf::I8(v) => v.len(),
                Buf::U16(v) => v.len(),
                Buf::I16(v) => v.len(),
                Buf::I32(v) => v.len(),
                Buf::F32(v) => v.len(),
            }
        }
        pub fn f32(&self) -> &[f32] {
            match self {
                Buf::F32(v) => v,
                _ => panic!("expected float data"),
            }
        }
        /// The values as i64 (for comparisons of integer outputs).
        pub fn ints(&self) -> Vec<i64> {
            match self {
                Buf::U8(v) => v.iter().map(|&x| x as i64).collect(),
                Buf::I8(v) => v.iter().map(|&x| x as i64).collect(),
                Buf::U16(v) => v.iter().map(|&x| x as i64).collect(),
                Buf::I16(v) => v.iter().map(|&x| x as i64).collect(),
                Buf::I32(v) => v.iter().map(|&x| x as i64).collect(),
                Buf::F32(_) => panic!("expected integer data"),
            }
        }
    }

    /// A tensor of a case: data, shape and ONNX dtype name.
    pub struct Tensor {
        pub buf: Buf,
        pub shape: Vec<i64>,
        pub onnx: String,
    }

    impl Tensor {
        pub fn dtype(&self) -> i32 {
            match self.onnx.as_str() {
                "FLOAT" | "FLOAT16" => QK_F32,
                "UINT8" => QK_U8,
                "INT8" => QK_I8,
                "UINT16" => QK_U16,
                "INT16" => QK_I16,
                "INT32" => QK_I32,
                "UINT4" => QK_UINT4,
                "INT4" => QK_INT4,
                d => panic!("no qk_dtype for {d}"),
            }
        }
        /// The buffer as the C ABI takes it: 4-bit types packed two per byte, low first.
        pub fn c_bytes(&self) -> Option<Vec<u8>> {
            if !matches!(self.onnx.as_str(), "UINT4" | "INT4") {
                return None;
            }
            let v: Vec<u8> = self.buf.ints().iter().map(|&x| (x as u8) & 0x0F).collect();
            Some(v.chunks(2).map(|c| c[0] | (c.get(1).copied().unwrap_or(0) << 4)).collect())
        }
    }

    fn load(dir: &Path, spec: &Value) -> Tensor {
        let file = spec["file"].as_str().expect("file");
        let bytes = std::fs::read(dir.join(file)).expect("read .npy");
        let npy = npyz::NpyFile::new(&bytes[..]).expect("parse .npy");
        let shape: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
        let descr = match npy.dtype() {
            npyz::DType::Plain(ts) => ts.to_string(),
            d => panic!("{file}: dtype {d:?}"),
        };
        let n = npy.len() as usize;
        let buf = match descr.as_str() {
            "|u1" => Buf::U8(npy.into_vec().unwrap()),
            "|i1" => Buf::I8(npy.into_vec().unwrap()),
            "<u2" => Buf::U16(npy.into_vec().unwrap()),
            "<i2" => Buf::I16(npy.into_vec().unwrap()),
            "<i4" => Buf::I32(npy.into_vec().unwrap()),
            "<f4" => Buf::F32(npy.into_vec().unwrap()),
            // Half-float scales, widened to f32 (exact) as an engine would before calling
            // qkern. npy has no trailer: the data are the file's last 2·n bytes.
            "<f2" => Buf::F32(bytes[bytes.len() - 2 * n..].chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
            d => panic!("{file}: npy dtype {d}"),
        };
        Tensor { buf, shape, onnx: spec["onnx_dtype"].as_str().unwrap_or("").to_string() }
    }

    pub struct Case {
        pub name: String,
        dir: PathBuf,
        json: Value,
    }

    impl Case {
        pub fn op(&self) -> &str {
            self.json["op"].as_str().unwrap_or("")
        }
        pub fn input(&self, idx: usize) -> Option<Tensor> {
            let spec = self.json["inputs"].as_array()?.iter().find(|i| i["op_input_index"].as_u64() == Some(idx as u64))?;
            Some(load(&self.dir, spec))
        }
        pub fn output(&self, idx: usize) -> Tensor {
            load(&self.dir, &self.json["outputs"][idx])
        }
        pub fn attr(&self, name: &str) -> i64 {
            self.json["attributes_with_schema_defaults"][name].as_i64().unwrap_or(0)
        }
        /// Why the C ABI does not run this case, if it does not.
        pub fn unsupported(&self) -> Option<String> {
            const OPS: [&str; 5] = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulInteger"];
            if !OPS.contains(&self.op()) {
                return Some(format!("{} is not one of the C ABI's operators", self.op()));
            }
            const DTYPES: [&str; 9] = ["FLOAT", "FLOAT16", "UINT8", "INT8", "UINT16", "INT16", "INT32", "UINT4", "INT4"];
            let mut bad: Vec<String> = ["inputs", "outputs"]
                .iter()
                .flat_map(|k| self.json[*k].as_array().cloned().unwrap_or_default())
                .filter_map(|t| t["onnx_dtype"].as_str().map(str::to_string))
                .filter(|d| !DTYPES.contains(&d.as_str()))
                .collect();
            bad.sort();
            bad.dedup();
            if !bad.is_empty() {
                return Some(format!("dtype {} has no qk_dtype", bad.join(", ")));
            }
            // QuantizeLinear divides by the scale in its own precision: an f16 scale
            // widened to f32 is a different computation.
            if self.op() == "QuantizeLinear" && self.input(1).is_some_and(|s| s.onnx != "FLOAT") {
                return Some("QuantizeLinear with a non-float scale".into());
            }
            None
        }
    }

    pub fn cases() -> Vec<Case> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/onnx");
        let mut cases: Vec<Case> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("ONNX conformance data not found at {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let dir = e.path();
                let json = serde_json::from_str(&std::fs::read_to_string(dir.join("test.json")).expect("test.json")).expect("test.json parses");
                Case { name: e.file_name().to_string_lossy().into_owned(), dir, json }
            })
            .collect();
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        cases
    }

    /// The pointer and count of an optional input (NULL, 0 when absent), with 4-bit data
    /// packed into `keep`.
    fn opt_ptr(t: &Option<Tensor>, keep: &mut Vec<Vec<u8>>) -> (*const c_void, usize) {
        match t {
            None => (null(), 0),
            Some(t) => ptr(t, keep),
        }
    }

    fn ptr(t: &Tensor, keep: &mut Vec<Vec<u8>>) -> (*const c_void, usize) {
        match t.c_bytes() {
            Some(packed) => {
                keep.push(packed);
                (keep.last().unwrap().as_ptr().cast(), t.buf.len())
            }
            None => (t.buf.ptr(), t.buf.len()),
        }
    }

    fn check(st: qk_status) -> Result<(), String> {
        if st == QK_OK { Ok(()) } else { Err(format!("status {st:?}: {}", last_error())) }
    }

    fn same_ints(what: &str, got: &[i64], want: &[i64]) -> Result<(), String> {
        if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
    }

    fn same_f32(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
        let g: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let w: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        if g == w { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
    }

    /// An output buffer of `n` elements of ONNX dtype `onnx` (4-bit: packed bytes).
    fn out_buf(onnx: &str, n: usize) -> Buf {
        match onnx {
            "UINT8" => Buf::U8(vec![0xA5; n]),
            "INT8" => Buf::I8(vec![0x5A; n]),
            "UINT16" => Buf::U16(vec![0xA5A5; n]),
            "INT16" => Buf::I16(vec![0x5A5A; n]),
            "UINT4" | "INT4" => Buf::U8(vec![0xA5; n.div_ceil(2)]),
            d => panic!("output dtype {d}"),
        }
    }

    /// Integer values of an output buffer (4-bit: unpacked, signed for INT4).
    fn out_ints(onnx: &str, b: &Buf, n: usize) -> Vec<i64> {
        match (onnx, b) {
            ("UINT4", Buf::U8(v)) => (0..n).map(|i| ((v[i / 2] >> (4 * (i % 2))) & 0x0F) as i64).collect(),
            ("INT4", Buf::U8(v)) => (0..n).map(|i| ((((v[i / 2] >> (4 * (i % 2))) << 4) as i8) >> 4) as i64).collect(),
            _ => b.ints(),
        }
    }

    fn out_ptr(b: &mut Buf) -> *mut c_void {
        b.ptr() as *mut c_void
    }

    pub fn run(case: &Case) -> Result<(), String> {
        let mut keep = Vec::new();
        match case.op() {
            "QuantizeLinear" => {
                let x = case.input(0).ok_or("x")?;
                let s = case.input(1).ok_or("y_scale")?;
                let z = case.input(2);
                let y = case.output(0);
                let (zp, zn) = opt_ptr(&z, &mut keep);
                let n = y.buf.len();
                let mut got = out_buf(&y.onnx, n);
                // SAFETY: every pointer is valid for its count; `got` is distinct.
                let st = unsafe {
                    qk_quantize_linear(
                        x.buf.f32().as_ptr(), x.shape.as_ptr(), x.shape.len(),
                        s.buf.f32().as_ptr(), s.buf.len(), zp, zn,
                        case.attr("axis"), case.attr("block_size"),
                        out_ptr(&mut got), y.dtype(), n,
                    )
                };
                check(st)?;
                same_ints("y", &out_ints(&y.onnx, &got, n), &y.buf.ints())
            }
            "DequantizeLinear" => {
                let x = case.input(0).ok_or("x")?;
                let s = case.input(1).ok_or("x_scale")?;
                let z = case.input(2);
                let y = case.output(0);
                let (xp, xn) = ptr(&x, &mut keep);
                let (zp, zn) = opt_ptr(&z, &mut keep);
                let mut got = vec![f32::NAN; y.buf.len()];
                // SAFETY: as above.
                let st = unsafe {
                    qk_dequantize_linear(
                        xp, x.dtype(), x.shape.as_ptr(), x.shape.len(),
                        s.buf.f32().as_ptr(), s.buf.len(), zp, zn,
                        case.attr("axis"), case.attr("block_size"),
                        got.as_mut_ptr(), got.len(),
                    )
                };
                assert_eq!(xn, x.buf.len());
                check(st)?;
                same_f32("y", &got, y.buf.f32())
            }
            "DynamicQuantizeLinear" => {
                let x = case.input(0).ok_or("x")?;
                let (y, ys, yz) = (case.output(0), case.output(1), case.output(2));
                let mut got = vec![0xA5u8; y.buf.len()];
                let (mut scale, mut zp) = (f32::NAN, 0xA5u8);
                // SAFETY: as above.
                let st = unsafe {
                    qk_dynamic_quantize_linear(x.buf.f32().as_ptr(), x.shape.as_ptr(), x.shape.len(), got.as_mut_ptr(), got.len(), &mut scale, &mut zp)
                };
                check(st)?;
                same_ints("y", &got.iter().map(|&v| v as i64).collect::<Vec<_>>(), &y.buf.ints())?;
                same_f32("y_scale", &[scale], ys.buf.f32())?;
                same_ints("y_zero_point", &[zp as i64], &yz.buf.ints())
            }
            "MatMulInteger" => {
                let (a, b) = (case.input(0).ok_or("A")?, case.input(1).ok_or("B")?);
                let (za, zb) = (case.input(2), case.input(3));
                let y = case.output(0);
                let (zap, zan) = opt_ptr(&za, &mut keep);
                let (zbp, zbn) = opt_ptr(&zb, &mut keep);
                let mut got = vec![i32::MIN; y.buf.len()];
                // SAFETY: as above.
                let st = unsafe {
                    qk_matmul_integer(
                        a.buf.ptr(), a.dtype(), a.shape.as_ptr(), a.shape.len(), zap, zan,
                        b.buf.ptr(), b.dtype(), b.shape.as_ptr(), b.shape.len(), zbp, zbn,
                        got.as_mut_ptr(), got.len(),
                    )
                };
                check(st)?;
                same_ints("Y", &got.iter().map(|&v| v as i64).collect::<Vec<_>>(), &y.buf.ints())
            }
            "QLinearMatMul" => {
                let t: Vec<Tensor> = (0..8).map(|i| case.input(i).ok_or(format!("input {i}"))).collect::<Result<_, _>>()?;
                let y = case.output(0);
                let mut got = out_buf(&y.onnx, y.buf.len());
                // SAFETY: as above.
                let st = unsafe {
                    qk_qlinear_matmul(
                        t[0].buf.ptr(), t[0].dtype(), t[0].shape.as_ptr(), t[0].shape.len(),
                        t[1].buf.f32().as_ptr(), t[1].buf.len(), t[2].buf.ptr(), t[2].buf.len(),
                        t[3].buf.ptr(), t[3].dtype(), t[3].shape.as_ptr(), t[3].shape.len(),
                        t[4].buf.f32().as_ptr(), t[4].buf.len(), t[5].buf.ptr(), t[5].buf.len(),
                        t[6].buf.f32().as_ptr(), t[6].buf.len(), t[7].buf.ptr(), t[7].buf.len(),
                        out_ptr(&mut got), y.dtype(), y.buf.len(),
                    )
                };
                check(st)?;
                same_ints("y", &got.ints(), &y.buf.ints())
            }
            op => Err(format!("no runner for {op}")),
        }
    }
}

#[test]
fn onnx_conformance_through_the_c_abi() {
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    let mut per_op = std::collections::BTreeMap::<String, usize>::new();
    for case in conformance::cases() {
        if let Some(why) = case.unsupported() {
            println!("UNSUPPORTED {}: {why}", case.name);
            skipped += 1;
            continue;
        }
        match conformance::run(&case) {
            Ok(()) => {
                println!("PASS {} ({})", case.name, case.op());
                *per_op.entry(case.op().to_string()).or_default() += 1;
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {}: {e}", case.name);
                failed.push(case.name.clone());
            }
        }
    }
    println!("C ABI ONNX conformance: {passed} passed, {} failed, {skipped} unsupported; per operator {per_op:?}", failed.len());
    assert!(failed.is_empty(), "failed: {failed:?}");
    // Every operator of the C ABI ran at least one case (the data set has them all).
    for op in ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulInteger"] {
        assert!(per_op.get(op).copied().unwrap_or(0) > 0, "no {op} case ran");
    }
}

// ---------------------------------------------------------------------------------------
// ONNX operators: parameters given by count, and bad input

use std::ffi::c_void;

use qkern::onnx::{QLinearInput, TensorRef};

#[allow(clippy::too_many_arguments)]
fn mmi(
    a: &[u8], a_dtype: i32, a_shape: &[i64], za: Option<&[u8]>,
    b: &[u8], b_dtype: i32, b_shape: &[i64], zb: Option<&[u8]>,
    y: &mut [i32],
) -> qk_status {
    let (zap, zan) = za.map_or((null(), 0), |z| (z.as_ptr().cast::<c_void>(), z.len()));
    let (zbp, zbn) = zb.map_or((null(), 0), |z| (z.as_ptr().cast::<c_void>(), z.len()));
    // SAFETY: every slice is valid for its length; `y` is distinct from the inputs.
    unsafe {
        qk_matmul_integer(
            a.as_ptr().cast(), a_dtype, a_shape.as_ptr(), a_shape.len(), zap, zan,
            b.as_ptr().cast(), b_dtype, b_shape.as_ptr(), b_shape.len(), zbp, zbn,
            y.as_mut_ptr(), y.len(),
        )
    }
}

#[test]
fn matmul_integer_per_row_and_per_column_zero_points() {
    // a: 2 batches × 3 × 4 (u8), b: 4 × 5 (i8), per-row a zero points (3 values, or 2·3
    // per batch matrix) and per-column b zero points (5 values).
    let a: Vec<u8> = (0..24).map(|i| (i * 11 % 256) as u8).collect();
    let b: Vec<i8> = (0..20).map(|i| (i * 29 % 256) as u8 as i8).collect();
    let b_bytes: Vec<u8> = b.iter().map(|&v| v as u8).collect();
    let za3 = [1u8, 200, 77];
    let za6 = [1u8, 200, 77, 5, 6, 7];
    let zb: Vec<u8> = [-3i8, 0, 4, 127, -128].iter().map(|&v| v as u8).collect();
    let zb_i8: Vec<i8> = zb.iter().map(|&v| v as i8).collect();
    for za in [&za3[..], &za6[..]] {
        let mut y = vec![0i32; 2 * 3 * 5];
        expect_ok(mmi(&a, QK_U8, &[2, 3, 4], Some(za), &b_bytes, QK_I8, &[4, 5], Some(&zb), &mut y));
        for t in 0..2 {
            for i in 0..3 {
                let zrow = za[(t * 3 + i) % za.len()] as i32;
                for j in 0..5 {
                    let want: i32 = (0..4).map(|p| (a[t * 12 + i * 4 + p] as i32 - zrow) * (b[p * 5 + j] as i32 - zb_i8[j] as i32)).sum();
                    assert_eq!(y[(t * 3 + i) * 5 + j], want, "za has {} values: batch {t} ({i}, {j})", za.len());
                }
            }
        }
    }
    // 1-D operands: a (K) · b (K) is a scalar.
    let mut y = [0i32; 1];
    expect_ok(mmi(&a[..4], QK_U8, &[4], None, &a[4..8], QK_U8, &[4], None, &mut y));
    assert_eq!(y[0], (0..4).map(|p| a[p] as i32 * a[4 + p] as i32).sum::<i32>());
}

#[test]
fn qlinear_matmul_parameter_counts_match_the_rust_api_shapes() {
    // a: [2, 3, 4] i8, b: [2, 4, 5] u8 (batched), y u8. a and y per row per batch matrix
    // (6 values → [2, 3, 1]), b per column per batch matrix (10 values → [2, 1, 5]).
    let a: Vec<i8> = (0..24).map(|i| ((i * 37) % 256) as u8 as i8).collect();
    let b: Vec<u8> = (0..40).map(|i| ((i * 53 + 3) % 256) as u8).collect();
    let sa: Vec<f32> = (0..6).map(|i| 0.01 + i as f32 * 0.003).collect();
    let za: Vec<i8> = (0..6).map(|i| i as i8 * 7 - 20).collect();
    let sb: Vec<f32> = (0..10).map(|i| 0.02 + i as f32 * 0.001).collect();
    let zb: Vec<u8> = (0..10).map(|i| 100 + i as u8 * 9).collect();
    let sy: Vec<f32> = (0..6).map(|i| 0.05 + i as f32 * 0.01).collect();
    let zy: Vec<u8> = (0..6).map(|i| 120 + i as u8).collect();
    let mut got = vec![0u8; 30];
    // SAFETY: valid slices; `got` distinct.
    let st = unsafe {
        qk_qlinear_matmul(
            a.as_ptr().cast(), QK_I8, [2i64, 3, 4].as_ptr(), 3, sa.as_ptr(), 6, za.as_ptr().cast(), 6,
            b.as_ptr().cast(), QK_U8, [2i64, 4, 5].as_ptr(), 3, sb.as_ptr(), 10, zb.as_ptr().cast(), 10,
            sy.as_ptr(), 6, zy.as_ptr().cast(), 6, got.as_mut_ptr().cast(), QK_U8, 30,
        )
    };
    expect_ok(st);
    let mut want = vec![0u8; 30];
    qkern::onnx::qlinear_matmul(
        QLinearInput::new(TensorRef::new(&a, &[2, 3, 4]), TensorRef::new(&sa, &[2, 3, 1]), TensorRef::new(&za, &[2, 3, 1])),
        QLinearInput::new(TensorRef::new(&b, &[2, 4, 5]), TensorRef::new(&sb, &[2, 1, 5]), TensorRef::new(&zb, &[2, 1, 5])),
        TensorRef::new(&sy, &[2, 3, 1]),
        TensorRef::new(&zy, &[2, 3, 1]),
        &mut want,
    )
    .unwrap();
    assert_eq!(got, want);

    // Per row (3) and per column (5), shared by the batch.
    // SAFETY: as above.
    let st = unsafe {
        qk_qlinear_matmul(
            a.as_ptr().cast(), QK_I8, [2i64, 3, 4].as_ptr(), 3, sa.as_ptr(), 3, za.as_ptr().cast(), 3,
            b.as_ptr().cast(), QK_U8, [2i64, 4, 5].as_ptr(), 3, sb.as_ptr(), 5, zb.as_ptr().cast(), 5,
            sy.as_ptr(), 1, zy.as_ptr().cast(), 1, got.as_mut_ptr().cast(), QK_U8, 30,
        )
    };
    expect_ok(st);
    qkern::onnx::qlinear_matmul(
        QLinearInput::new(TensorRef::new(&a, &[2, 3, 4]), TensorRef::new(&sa[..3], &[3]), TensorRef::new(&za[..3], &[3])),
        QLinearInput::new(TensorRef::new(&b, &[2, 4, 5]), TensorRef::new(&sb[..5], &[5]), TensorRef::new(&zb[..5], &[5])),
        TensorRef::new(&sy[..1], &[]),
        TensorRef::new(&zy[..1], &[]),
        &mut want,
    )
    .unwrap();
    assert_eq!(got, want);

    // Bad counts and parameters.
    const F: &str = "qk_qlinear_matmul";
    let call = |sa_n: usize, za_n: usize, sb_n: usize, sy_s: &[f32], y_dtype: i32, y_n: usize, got: &mut [u8]| {
        // SAFETY: counts within the buffers; `got` distinct.
        unsafe {
            qk_qlinear_matmul(
                a.as_ptr().cast(), QK_I8, [2i64, 3, 4].as_ptr(), 3, sa.as_ptr(), sa_n, za.as_ptr().cast(), za_n,
                b.as_ptr().cast(), QK_U8, [2i64, 4, 5].as_ptr(), 3, sb.as_ptr(), sb_n, zb.as_ptr().cast(), sb_n,
                sy_s.as_ptr(), sy_s.len(), zy.as_ptr().cast(), sy_s.len(), got.as_mut_ptr().cast(), y_dtype, y_n,
            )
        }
    };
    expect_err(call(3, 1, 5, &sy[..1], QK_U8, 30, &mut got), QK_ERR_SHAPE, F, "`a_zero_point` has 1");
    expect_err(call(2, 2, 5, &sy[..1], QK_U8, 30, &mut got), QK_ERR_SHAPE, F, "`a_scale` has 2 values");
    expect_err(call(1, 1, 4, &sy[..1], QK_U8, 30, &mut got), QK_ERR_SHAPE, F, "`b_scale` has 4 values");
    expect_err(call(1, 1, 1, &sy[..1], QK_U8, 29, &mut got), QK_ERR_SHAPE, F, "`y` has 29 elements");
    expect_err(call(1, 1, 1, &[0.0], QK_U8, 30, &mut got), QK_ERR_SCALE, F, "y_scale");
    expect_err(call(1, 1, 1, &[f32::NAN], QK_U8, 30, &mut got), QK_ERR_SCALE, F, "y_scale");
    expect_err(call(1, 1, 1, &sy[..1], QK_U16, 30, &mut got), QK_ERR_UNSUPPORTED, F, "`y_dtype`");
    expect_err(call(1, 1, 1, &sy[..1], 1234, 30, &mut got), QK_ERR_INVALID_PARAMETER, F, "`y_dtype`");
    // SAFETY: a NULL scale is the error under test.
    let st = unsafe {
        qk_qlinear_matmul(
            a.as_ptr().cast(), QK_I8, [2i64, 3, 4].as_ptr(), 3, null(), 1, za.as_ptr().cast(), 1,
            b.as_ptr().cast(), QK_U8, [2i64, 4, 5].as_ptr(), 3, sb.as_ptr(), 1, zb.as_ptr().cast(), 1,
            sy.as_ptr(), 1, zy.as_ptr().cast(), 1, got.as_mut_ptr().cast(), QK_U8, 30,
        )
    };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`a_scale`");
    // y overlapping b.
    let mut bb = b.clone();
    let p = bb.as_mut_ptr();
    // SAFETY: the overlap is refused before any slice is made.
    let st = unsafe {
        qk_qlinear_matmul(
            a.as_ptr().cast(), QK_I8, [2i64, 3, 4].as_ptr(), 3, sa.as_ptr(), 1, za.as_ptr().cast(), 1,
            p.cast_const().cast(), QK_U8, [2i64, 4, 5].as_ptr(), 3, sb.as_ptr(), 1, zb.as_ptr().cast(), 1,
            sy.as_ptr(), 1, zy.as_ptr().cast(), 1, p.wrapping_add(5).cast(), QK_U8, 30,
        )
    };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`y` overlaps `b`");
    assert_eq!(bb, b);
}

#[test]
fn matmul_integer_bad_input() {
    const F: &str = "qk_matmul_integer";
    let a = [1u8; 12];
    let b = [2u8; 20];
    let mut y = [0i32; 15];
    let ok = |y: &mut [i32]| mmi(&a, QK_U8, &[3, 4], None, &b, QK_U8, &[4, 5], None, y);
    expect_ok(ok(&mut y));
    assert!(y.iter().all(|&v| v == 8));
    // Shapes.
    expect_err(mmi(&a, QK_U8, &[4, 3], None, &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_SHAPE, F, "K");
    expect_err(mmi(&a, QK_U8, &[3, -4], None, &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_SHAPE, F, "negative");
    expect_err(mmi(&a, QK_U8, &[], None, &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_SHAPE, F, "rank");
    expect_err(mmi(&a, QK_U8, &[3, 4], None, &b, QK_U8, &[4, 5], None, &mut y[..14]), QK_ERR_SHAPE, F, "`y` has 14");
    expect_err(
        mmi(&a, QK_U8, &[i64::MAX, i64::MAX, 4], None, &b, QK_U8, &[4, 5], None, &mut y),
        QK_ERR_OVERFLOW, F, "a_shape",
    );
    // Zero points: 2 values for M = 3 rows, 3 for N = 5 columns.
    expect_err(mmi(&a, QK_U8, &[3, 4], Some(&[1, 2]), &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_SHAPE, F, "`a_zero_point` has 2");
    expect_err(mmi(&a, QK_U8, &[3, 4], None, &b, QK_U8, &[4, 5], Some(&[1, 2, 3]), &mut y), QK_ERR_SHAPE, F, "`b_zero_point` has 3");
    // Dtypes.
    expect_err(mmi(&a, QK_F32, &[3, 4], None, &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_UNSUPPORTED, F, "`a_dtype`");
    expect_err(mmi(&a, QK_U8, &[3, 4], None, &b, -7, &[4, 5], None, &mut y), QK_ERR_INVALID_PARAMETER, F, "`b_dtype`");
    // Rank too large, NULL shape with a rank, NULL data, NULL zero point with a count.
    let big = [1i64; 65];
    expect_err(mmi(&a, QK_U8, &big, None, &b, QK_U8, &[4, 5], None, &mut y), QK_ERR_INVALID_PARAMETER, F, "rank 65");
    // SAFETY: the NULLs are the errors under test; everything else is valid.
    unsafe {
        let st = qk_matmul_integer(a.as_ptr().cast(), QK_U8, null(), 2, null(), 0, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, y.as_mut_ptr(), 15);
        expect_err(st, QK_ERR_NULL_POINTER, F, "`a_shape`");
        let st = qk_matmul_integer(null(), QK_U8, [3i64, 4].as_ptr(), 2, null(), 0, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, y.as_mut_ptr(), 15);
        expect_err(st, QK_ERR_NULL_POINTER, F, "`a`");
        let st = qk_matmul_integer(a.as_ptr().cast(), QK_U8, [3i64, 4].as_ptr(), 2, null(), 3, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, y.as_mut_ptr(), 15);
        expect_err(st, QK_ERR_NULL_POINTER, F, "`a_zero_point`");
        let st = qk_matmul_integer(a.as_ptr().cast(), QK_U8, [3i64, 4].as_ptr(), 2, null(), 0, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, null_mut(), 15);
        expect_err(st, QK_ERR_NULL_POINTER, F, "`y`");
        // y overlapping a.
        let mut buf = [0i32; 16];
        let p = buf.as_mut_ptr();
        let st = qk_matmul_integer(p.cast_const().cast(), QK_U8, [3i64, 4].as_ptr(), 2, null(), 0, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, p.wrapping_add(1), 15);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`y` overlaps `a`");
        // A misaligned y.
        let st = qk_matmul_integer(a.as_ptr().cast(), QK_U8, [3i64, 4].as_ptr(), 2, null(), 0, b.as_ptr().cast(), QK_U8, [4i64, 5].as_ptr(), 2, null(), 0, (p as *mut u8).wrapping_add(2).cast(), 15);
        expect_err(st, QK_ERR_INVALID_PARAMETER, F, "aligned");
        assert!(buf.iter().all(|&v| v == 0));
    }
    // Zero sizes: M = 0 and K = 0.
    expect_ok(mmi(&a, QK_U8, &[0, 4], None, &b, QK_U8, &[4, 5], None, &mut y[..0]));
    let mut y6 = [7i32; 6];
    expect_ok(mmi(&a, QK_U8, &[2, 0], None, &b, QK_U8, &[0, 3], None, &mut y6));
    assert_eq!(y6, [0; 6]);
}

#[allow(clippy::too_many_arguments)]
fn q(x: &[f32], shape: &[i64], s: &[f32], z: Option<(&[u8], usize)>, axis: i64, block: i64, y: &mut [u8], y_dtype: i32, y_count: usize) -> qk_status {
    let (zp, zn) = z.map_or((null(), 0), |(z, n)| (z.as_ptr().cast::<c_void>(), n));
    // SAFETY: the tests pass buffers at least as long as the counts say.
    unsafe { qk_quantize_linear(x.as_ptr(), shape.as_ptr(), shape.len(), s.as_ptr(), s.len(), zp, zn, axis, block, y.as_mut_ptr().cast(), y_dtype, y_count) }
}

#[test]
fn quantize_linear_four_bit_packing_and_bad_input() {
    const F: &str = "qk_quantize_linear";
    // Five int4 values: an odd count, so the last byte has a zero high nibble.
    let x = [-8.0f32, -1.0, 0.0, 3.0, 100.0];
    let mut y = [0xFFu8; 3];
    expect_ok(q(&x, &[5], &[1.0], None, 1, 0, &mut y, QK_INT4, 5));
    // -8 → 0x8, -1 → 0xF, 0 → 0x0, 3 → 0x3, 100 saturates to 7.
    assert_eq!(y, [0xF8, 0x30, 0x07]);
    // uint4 with a zero point of 2 (packed: one element in the low nibble).
    let mut y = [0xFFu8; 3];
    expect_ok(q(&x, &[5], &[1.0], Some((&[0x02], 1)), 1, 0, &mut y, QK_UINT4, 5));
    // -8+2 → 0, -1+2 → 1, 2, 5, 15.
    assert_eq!(y, [0x10, 0x52, 0x0F]);

    let mut y = [0u8; 8];
    for d in [QK_F32, QK_I32] {
        expect_err(q(&x, &[5], &[1.0], None, 1, 0, &mut y, d, 5), QK_ERR_UNSUPPORTED, F, "`y_dtype`");
    }
    for d in [0, 7, 25, -1] {
        expect_err(q(&x, &[5], &[1.0], None, 1, 0, &mut y, d, 5), QK_ERR_INVALID_PARAMETER, F, "`y_dtype`");
    }
    expect_err(q(&x, &[5], &[1.0], None, 1, 0, &mut y, QK_U8, 4), QK_ERR_SHAPE, F, "`y` has 4");
    expect_err(q(&x, &[5], &[0.0], None, 1, 0, &mut y, QK_U8, 5), QK_ERR_SCALE, F, "y_scale");
    expect_err(q(&x, &[5], &[-1.0], None, 1, 0, &mut y, QK_U8, 5), QK_ERR_SCALE, F, "y_scale");
    expect_err(q(&x, &[5], &[1.0], Some((&[1, 2], 2)), 1, 0, &mut y, QK_U8, 5), QK_ERR_SHAPE, F, "`y_zero_point` has 2");
    // Per axis: 2 scales for an axis of length 5.
    expect_err(q(&x, &[5], &[1.0, 2.0], None, 0, 0, &mut y, QK_U8, 5), QK_ERR_SHAPE, F, "y_scale");
    // Blocked: axis out of range, wrong count, negative block size.
    let x6 = [1.0f32; 6];
    expect_err(q(&x6, &[2, 3], &[1.0, 1.0, 1.0, 1.0], None, 2, 2, &mut y, QK_U8, 6), QK_ERR_INVALID_PARAMETER, F, "`axis`");
    expect_err(q(&x6, &[2, 3], &[1.0; 3], None, 1, 2, &mut y, QK_U8, 6), QK_ERR_SHAPE, F, "needs 4");
    expect_ok(q(&x6, &[2, 3], &[1.0; 4], None, 1, 2, &mut y, QK_U8, 6));
    expect_err(q(&x6, &[2, 3], &[1.0; 3], None, 1, -1, &mut y, QK_U8, 6), QK_ERR_INVALID_PARAMETER, F, "block_size");
    // Misaligned u16 output.
    let mut wide = [0u16; 8];
    let odd = (wide.as_mut_ptr() as *mut u8).wrapping_add(1);
    // SAFETY: refused before any access.
    let st = unsafe { qk_quantize_linear(x.as_ptr(), [5i64].as_ptr(), 1, [1.0f32].as_ptr(), 1, null(), 0, 1, 0, odd.cast(), QK_U16, 5) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "aligned");
    // An empty tensor: nothing to do, pointers still required.
    expect_ok(q(&x, &[0], &[1.0], None, 1, 0, &mut y, QK_U8, 0));
    // SAFETY: NULL x is the error under test.
    let st = unsafe { qk_quantize_linear(null(), [5i64].as_ptr(), 1, [1.0f32].as_ptr(), 1, null(), 0, 1, 0, y.as_mut_ptr().cast(), QK_U8, 5) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`x`");
    // y (4-bit: 3 bytes) overlapping x.
    let mut xs = [0.5f32; 4];
    let p = xs.as_mut_ptr();
    // SAFETY: the overlap is refused before any slice is made.
    let st = unsafe { qk_quantize_linear(p.cast_const(), [4i64].as_ptr(), 1, [1.0f32].as_ptr(), 1, null(), 0, 1, 0, p.cast::<u8>().wrapping_add(15).cast(), QK_INT4, 4) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`y` overlaps `x`");
}

#[test]
fn dequantize_linear_bad_input() {
    const F: &str = "qk_dequantize_linear";
    let dq = |x: *const c_void, d: i32, shape: &[i64], s: &[f32], z: *const c_void, zn: usize, y: &mut [f32]| {
        // SAFETY: the tests pass buffers at least as long as the counts say.
        unsafe { qk_dequantize_linear(x, d, shape.as_ptr(), shape.len(), s.as_ptr(), s.len(), z, zn, 1, 0, y.as_mut_ptr(), y.len()) }
    };
    let x = [10i32, -20, 30, 0];
    let mut y = [0f32; 4];
    expect_ok(dq(x.as_ptr().cast(), QK_I32, &[4], &[0.5], null(), 0, &mut y));
    assert_eq!(y, [5.0, -10.0, 15.0, 0.0]);
    // int32 has no zero point in ONNX: zeros are accepted, anything else is not.
    expect_ok(dq(x.as_ptr().cast(), QK_I32, &[4], &[0.5], [0i32].as_ptr().cast(), 1, &mut y));
    expect_err(dq(x.as_ptr().cast(), QK_I32, &[4], &[0.5], [3i32].as_ptr().cast(), 1, &mut y), QK_ERR_INVALID_PARAMETER, F, "int32");
    // int4, packed: 0xF8 = [-8, -1], 0x07 = [7, (pad)].
    let p4 = [0xF8u8, 0x07];
    let mut y3 = [0f32; 3];
    expect_ok(dq(p4.as_ptr().cast(), QK_INT4, &[3], &[2.0], [0x01u8].as_ptr().cast(), 1, &mut y3));
    assert_eq!(y3, [-18.0, -4.0, 12.0]);
    expect_ok(dq(p4.as_ptr().cast(), QK_UINT4, &[3], &[2.0], null(), 0, &mut y3));
    assert_eq!(y3, [16.0, 30.0, 14.0]);

    expect_err(dq(x.as_ptr().cast(), QK_F32, &[4], &[0.5], null(), 0, &mut y), QK_ERR_UNSUPPORTED, F, "`x_dtype`");
    expect_err(dq(x.as_ptr().cast(), 99, &[4], &[0.5], null(), 0, &mut y), QK_ERR_INVALID_PARAMETER, F, "`x_dtype`");
    expect_err(dq(x.as_ptr().cast(), QK_I32, &[4], &[f32::INFINITY], null(), 0, &mut y), QK_ERR_SCALE, F, "x_scale");
    expect_err(dq(x.as_ptr().cast(), QK_I32, &[2, 2], &[0.5], null(), 0, &mut y[..3]), QK_ERR_SHAPE, F, "`y` has 3");
    expect_err(dq(x.as_ptr().cast(), QK_U8, &[4], &[0.5], [1u8, 2].as_ptr().cast(), 2, &mut y), QK_ERR_SHAPE, F, "`x_zero_point` has 2");
    expect_err(dq(x.as_ptr().cast(), QK_U8, &[4], &[0.5], null(), 1, &mut y), QK_ERR_NULL_POINTER, F, "`x_zero_point`");
    let odd = (x.as_ptr() as *const u8).wrapping_add(1);
    expect_err(dq(odd.cast(), QK_I16, &[2], &[0.5], null(), 0, &mut y[..2]), QK_ERR_INVALID_PARAMETER, F, "aligned");
    expect_err(dq(x.as_ptr().cast(), QK_U8, &[i64::MAX, 4], &[0.5], null(), 0, &mut y), QK_ERR_OVERFLOW, F, "x_shape");
    // y overlapping x.
    let mut buf = [0f32; 8];
    let p = buf.as_mut_ptr();
    // SAFETY: the overlap is refused before any slice is made.
    let st = unsafe { qk_dequantize_linear(p.cast_const().cast(), QK_U8, [4i64].as_ptr(), 1, [1.0f32].as_ptr(), 1, null(), 0, 1, 0, p, 4) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`y` overlaps `x`");
}

#[test]
fn dynamic_quantize_linear_bad_input() {
    const F: &str = "qk_dynamic_quantize_linear";
    let x = [0.0f32, 2.55, -2.55];
    let (mut s, mut z) = (0f32, 0u8);
    let mut y = [0u8; 3];
    // SAFETY: valid, distinct buffers.
    expect_ok(unsafe { qk_dynamic_quantize_linear(x.as_ptr(), [3i64].as_ptr(), 1, y.as_mut_ptr(), 3, &mut s, &mut z) });
    assert_eq!(s, (2.55f32 - -2.55f32) / 255.0);
    // SAFETY: as above (a NaN input is the error).
    let st = unsafe { qk_dynamic_quantize_linear([f32::NAN].as_ptr(), [1i64].as_ptr(), 1, y.as_mut_ptr(), 1, &mut s, &mut z) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "finite");
    // SAFETY: as above (wrong count).
    let st = unsafe { qk_dynamic_quantize_linear(x.as_ptr(), [3i64].as_ptr(), 1, y.as_mut_ptr(), 2, &mut s, &mut z) };
    expect_err(st, QK_ERR_SHAPE, F, "`y` has 2");
    // SAFETY: NULL outputs are the errors under test.
    let st = unsafe { qk_dynamic_quantize_linear(x.as_ptr(), [3i64].as_ptr(), 1, y.as_mut_ptr(), 3, null_mut(), &mut z) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`y_scale`");
    // SAFETY: as above.
    let st = unsafe { qk_dynamic_quantize_linear(x.as_ptr(), [3i64].as_ptr(), 1, y.as_mut_ptr(), 3, &mut s, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`y_zero_point`");
    // The zero point inside y.
    // SAFETY: the overlap is refused before any write.
    let st = unsafe { qk_dynamic_quantize_linear(x.as_ptr(), [3i64].as_ptr(), 1, y.as_mut_ptr(), 3, &mut s, y.as_mut_ptr().wrapping_add(1)) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "overlaps");
}

#[test]
fn matmul_output_shape_query() {
    const F: &str = "qk_matmul_output_shape";
    let shape = |a: &[i64], b: &[i64], cap: usize| {
        let mut out = [-1i64; 8];
        let mut rank = usize::MAX;
        // SAFETY: valid buffers; `cap` ≤ 8.
        let st = unsafe { qk_matmul_output_shape(a.as_ptr(), a.len(), b.as_ptr(), b.len(), out.as_mut_ptr(), cap, &mut rank) };
        (st, out[..rank.min(8)].to_vec())
    };
    assert_eq!(shape(&[2, 3, 4], &[4, 5], 8), (QK_OK, vec![2, 3, 5]));
    assert_eq!(shape(&[7, 1, 3, 4], &[6, 4, 5], 4), (QK_OK, vec![7, 6, 3, 5]));
    assert_eq!(shape(&[4], &[4, 5], 8), (QK_OK, vec![5]));
    assert_eq!(shape(&[4], &[4], 8), (QK_OK, vec![]));
    let (st, _) = shape(&[2, 3, 4], &[4, 5], 2);
    expect_err(st, QK_ERR_BUFFER_TOO_SMALL, F, "needs 3");
    let (st, _) = shape(&[3, 4], &[5, 5], 8);
    expect_err(st, QK_ERR_SHAPE, F, "K");
    let (st, _) = shape(&[2, 3, 4], &[3, 4, 5], 8);
    expect_err(st, QK_ERR_SHAPE, F, "broadcast");
}

// ---------------------------------------------------------------------------------------
// Prepacked convolution (qk_conv_filter_*, qk_conv_*)

fn conv_geometry(in_c: usize, out_c: usize, groups: usize) -> qk_conv_geometry {
    qk_conv_geometry {
        batch: 2,
        in_h: 7,
        in_w: 6,
        in_c,
        out_c,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 2,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 2,
        pad_top: 1,
        pad_left: 2,
        pad_bottom: 0,
        pad_right: 1,
        groups,
    }
}

fn rust_geometry(g: &qk_conv_geometry) -> qkern::conv::Conv2dGeometry {
    qkern::conv::Conv2dGeometry::new(g.batch, g.in_h, g.in_w, g.in_c, g.out_c, g.kernel_h, g.kernel_w)
        .stride(g.stride_h, g.stride_w)
        .dilation(g.dilation_h, g.dilation_w)
        .padding(g.pad_top, g.pad_left, g.pad_bottom, g.pad_right)
        .groups(g.groups)
}

fn conv_create(g: &qk_conv_geometry, w: &[i8], zp: &[i32], scale: &[f32]) -> (qk_status, *mut qk_conv_filter) {
    let mut f = null_mut();
    let sp = if scale.is_empty() { null() } else { scale.as_ptr() };
    // SAFETY: every buffer is valid for its count.
    let st = unsafe { qk_conv_filter_create(g, w.as_ptr().cast(), QK_I8, w.len(), zp.as_ptr(), zp.len(), sp, scale.len(), &mut f) };
    (st, f)
}

/// Every output stage through the C ABI against the 7-loop reference (i32) and against
/// the Rust API on the same filter (f32, requantized; those are checked exactly against
/// the reference by tests/conv.rs), for a grouped and a depthwise layer.
#[test]
fn conv_filter_values() {
    use qkern_kernels::reference::conv2d_i64;
    for (in_c, out_c, groups) in [(6, 4, 2), (5, 5, 5), (3, 7, 1)] {
        let g = conv_geometry(in_c, out_c, groups);
        let rg = rust_geometry(&g);
        let w: Vec<i8> = (0..rg.weight_len()).map(|i| ((i * 37 + 11) % 255) as i32 as u8 as i8).collect();
        let x: Vec<u8> = (0..rg.input_len()).map(|i| ((i * 53 + 7) % 256) as u8).collect();
        let zw: Vec<i32> = (0..out_c).map(|j| j as i32 * 3 - 5).collect();
        let sw: Vec<f32> = (0..out_c).map(|j| 0.01 + j as f32 * 0.003).collect();
        let bias: Vec<i32> = (0..out_c).map(|j| j as i32 * 101 - 250).collect();
        let (st, f) = conv_create(&g, &w, &zw, &sw);
        expect_ok(st);
        let mut acc = vec![0i64; rg.output_len()];
        conv2d_i64(&rg.to_reference(), &x, 9, &w, &zw, &mut acc);
        let mut y = vec![0i32; rg.output_len()];
        // SAFETY: buffers valid for their counts; `f` is live.
        expect_ok(unsafe { qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len(), 9, bias.as_ptr(), bias.len(), y.as_mut_ptr(), y.len()) });
        for (i, (&o, &a)) in y.iter().zip(&acc).enumerate() {
            assert_eq!(o as i64, a + bias[i % out_c] as i64, "i32 at {i}, groups {groups}");
        }

        let rf = qkern::conv::Conv2d::new(rg, &w, WeightQuant::per_column(&zw, &sw)).unwrap();
        let input = qkern::conv::ConvInput::new(&x[..], 9u8, 0.05);
        let bias_f: Vec<f32> = (0..out_c).map(|j| j as f32 * 0.25 - 0.5).collect();
        let mut yf = vec![0f32; rg.output_len()];
        let mut want_f = yf.clone();
        qkern::conv::conv2d_f32(&rf, input, Some(&bias_f), &mut want_f).unwrap();
        // SAFETY: as above.
        expect_ok(unsafe { qk_conv_f32(f, x.as_ptr().cast(), QK_U8, x.len(), 9, 0.05, bias_f.as_ptr(), bias_f.len(), yf.as_mut_ptr(), yf.len()) });
        assert_eq!(yf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want_f.iter().map(|v| v.to_bits()).collect::<Vec<_>>());

        let mut yq = vec![0i8; rg.output_len()];
        let mut want_q = yq.clone();
        let rq = Requantize::new(0.7, -3i8).mode(RequantMode::TfliteDoubleRounding).bias(&bias).clamp(-100, 90);
        qkern::conv::conv2d_requantize(&rf, input, &rq, &mut want_q).unwrap();
        // SAFETY: as above.
        expect_ok(unsafe {
            qk_conv_requantize(f, x.as_ptr().cast(), QK_U8, x.len(), 9, 0.05, bias.as_ptr(), bias.len(), 0.7, -3,
                QK_REQUANT_TFLITE_DOUBLE_ROUNDING, -100, 90, yq.as_mut_ptr().cast(), QK_I8, yq.len())
        });
        assert_eq!(yq, want_q, "requantized, groups {groups}");
        assert!(yq.iter().any(|&v| v != -100 && v != 90), "the clamp should not hide everything");
        // SAFETY: `f` is live and freed once.
        expect_ok(unsafe { qk_conv_filter_free(f) });
    }
}

#[test]
fn conv_filter_bad_input() {
    let g = conv_geometry(6, 4, 2);
    let rg = rust_geometry(&g);
    let w = vec![1i8; rg.weight_len()];
    let mut f = null_mut();
    // SAFETY: testing the NULL checks; other buffers are valid.
    let st = unsafe { qk_conv_filter_create(null(), w.as_ptr().cast(), QK_I8, w.len(), [0].as_ptr(), 1, null(), 0, &mut f) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_conv_filter_create", "`geometry`");
    assert!(f.is_null());
    // SAFETY: as above.
    let st = unsafe { qk_conv_filter_create(&g, null(), QK_I8, w.len(), [0].as_ptr(), 1, null(), 0, &mut f) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_conv_filter_create", "`weights`");
    // SAFETY: as above.
    let st = unsafe { qk_conv_filter_create(&g, w.as_ptr().cast(), QK_I8, w.len(), [0].as_ptr(), 1, null(), 0, null_mut()) };
    expect_err(st, QK_ERR_NULL_POINTER, "qk_conv_filter_create", "`out`");
    // Groups not dividing the channels, empty output, short weights, zero points per channel of the wrong length, bad dtype.
    let (st, f) = conv_create(&qk_conv_geometry { groups: 4, ..g }, &w, &[0], &[]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, "qk_conv_filter_create", "group");
    assert!(f.is_null());
    let (st, _) = conv_create(&qk_conv_geometry { in_h: 1, pad_top: 0, ..g }, &w, &[0], &[]);
    expect_err(st, QK_ERR_INVALID_PARAMETER, "qk_conv_filter_create", "output size");
    let (st, _) = conv_create(&g, &w[1..], &[0], &[]);
    expect_err(st, QK_ERR_SHAPE, "qk_conv_filter_create", "weights");
    let (st, _) = conv_create(&g, &w, &[0, 0, 0], &[]);
    expect_err(st, QK_ERR_SHAPE, "qk_conv_filter_create", "`zero_point`");
    let mut f2 = null_mut();
    // SAFETY: valid buffers, an invalid dtype.
    let st = unsafe { qk_conv_filter_create(&g, w.as_ptr().cast(), QK_F32, w.len(), [0].as_ptr(), 1, null(), 0, &mut f2) };
    expect_err(st, QK_ERR_UNSUPPORTED, "qk_conv_filter_create", "`weights_dtype`");

    // Runs: a filter without scales, NULL filter/input, short input/output, overlap.
    let (st, f) = conv_create(&g, &w, &[0], &[]);
    expect_ok(st);
    let x = vec![1u8; rg.input_len()];
    let mut y = vec![0i32; rg.output_len()];
    // SAFETY: testing the checks; every non-NULL buffer is valid for its count.
    unsafe {
        let st = qk_conv_i32(null(), x.as_ptr().cast(), QK_U8, x.len(), 0, null(), 0, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_NULL_POINTER, "qk_conv_i32", "`filter`");
        let st = qk_conv_i32(f, null(), QK_U8, x.len(), 0, null(), 0, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_NULL_POINTER, "qk_conv_i32", "`x`");
        let st = qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len() - 1, 0, null(), 0, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_BUFFER_TOO_SMALL, "qk_conv_i32", "input");
        let st = qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len(), 0, null(), 0, y.as_mut_ptr(), y.len() - 1);
        expect_err(st, QK_ERR_BUFFER_TOO_SMALL, "qk_conv_i32", "output");
        let st = qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len(), 0, [1, 2].as_ptr(), 2, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_SHAPE, "qk_conv_i32", "bias");
        let st = qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len(), 300, null(), 0, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_ZERO_POINT, "qk_conv_i32", "x_zero_point");
        let st = qk_conv_i32(f, y.as_ptr().cast(), QK_U8, x.len(), 0, null(), 0, y.as_mut_ptr(), y.len());
        expect_err(st, QK_ERR_INVALID_PARAMETER, "qk_conv_i32", "overlap");
        expect_ok(qk_conv_i32(f, x.as_ptr().cast(), QK_U8, x.len(), 0, null(), 0, y.as_mut_ptr(), y.len()));
        let mut yf = vec![0f32; rg.output_len()];
        let st = qk_conv_f32(f, x.as_ptr().cast(), QK_U8, x.len(), 0, 1.0, null(), 0, yf.as_mut_ptr(), yf.len());
        expect_err(st, QK_ERR_INVALID_PARAMETER, "qk_conv_f32", "scale");
        let mut yq = vec![0u8; rg.output_len()];
        let st = qk_conv_requantize(f, x.as_ptr().cast(), QK_U8, x.len(), 0, 1.0, null(), 0, 1.0, 0, 7, 0, 255, yq.as_mut_ptr().cast(), QK_U8, yq.len());
        expect_err(st, QK_ERR_INVALID_PARAMETER, "qk_conv_requantize", "mode");
        expect_ok(qk_conv_filter_free(f));
        expect_ok(qk_conv_filter_free(null_mut()));
    }
}

// ---------------------------------------------------------------------------------------
// ONNX QLinearConv / ConvInteger from C

fn no_attrs() -> qk_conv_attrs {
    qk_conv_attrs {
        auto_pad: QK_AUTO_PAD_NOTSET,
        pads: null(),
        pads_count: 0,
        strides: null(),
        strides_count: 0,
        dilations: null(),
        dilations_count: 0,
        kernel_shape: null(),
        kernel_shape_count: 0,
        group: 1,
    }
}

/// The C entry points against the Rust operators (checked against the ONNX conformance
/// data and the reference by tests/onnx_conformance.rs and tests/conv.rs), for explicit
/// pads, auto_pad, strides, dilations, groups (including depthwise) and per-channel
/// weight parameters.
#[test]
fn qlinear_conv_and_conv_integer_values() {
    use qkern::onnx::{AutoPad, ConvAttrs, TensorRef};
    for (c, m, group, auto_pad) in [(4, 6, 2, QK_AUTO_PAD_NOTSET), (6, 6, 6, QK_AUTO_PAD_SAME_UPPER), (3, 5, 1, QK_AUTO_PAD_SAME_LOWER), (2, 4, 1, QK_AUTO_PAD_VALID)] {
        let (n, h, wd, kh, kw) = (2usize, 7usize, 6usize, 3usize, 2usize);
        let x_shape = [n as i64, c as i64, h as i64, wd as i64];
        let w_shape = [m as i64, (c / group) as i64, kh as i64, kw as i64];
        let xs: Vec<usize> = x_shape.iter().map(|&d| d as usize).collect();
        let ws: Vec<usize> = w_shape.iter().map(|&d| d as usize).collect();
        let x: Vec<u8> = (0..xs.iter().product::<usize>()).map(|i| ((i * 29 + 3) % 256) as u8).collect();
        let w: Vec<i8> = (0..ws.iter().product::<usize>()).map(|i| ((i * 41 + 5) % 256) as u8 as i8).collect();
        let pads = [1i64, 0, 0, 1];
        let strides = [2i64, 1];
        let dilations = [1i64, 2];
        let mut ca = no_attrs();
        ca.auto_pad = auto_pad;
        ca.group = group as i64;
        if auto_pad == QK_AUTO_PAD_NOTSET {
            (ca.pads, ca.pads_count) = (pads.as_ptr(), 4);
            (ca.dilations, ca.dilations_count) = (dilations.as_ptr(), 2);
        }
        (ca.strides, ca.strides_count) = (strides.as_ptr(), 2);
        let ra = ConvAttrs {
            auto_pad: [AutoPad::NotSet, AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid][auto_pad as usize],
            dilations: if auto_pad == QK_AUTO_PAD_NOTSET { vec![1, 2] } else { vec![] },
            group,
            kernel_shape: vec![],
            pads: if auto_pad == QK_AUTO_PAD_NOTSET { vec![1, 0, 0, 1] } else { vec![] },
            strides: vec![2, 1],
        };
        let y_shape = qkern::onnx::conv_output_shape(&xs, &ws, &ra).unwrap();
        let y_n: usize = y_shape.iter().product();
        let zw: Vec<i8> = (0..m).map(|j| j as i8 - 2).collect();
        let sw: Vec<f32> = (0..m).map(|j| 0.01 + 0.002 * j as f32).collect();
        let bias: Vec<i32> = (0..m).map(|j| j as i32 * 77 - 100).collect();
        let (sx, zx, sy, zy) = ([0.03f32], [7u8], [0.4f32], [-5i8]);

        let mut want = vec![0i8; y_n];
        qkern::onnx::qlinear_conv(
            TensorRef::new(&x, &xs), TensorRef::new(&sx, &[]), TensorRef::new(&zx, &[]),
            TensorRef::new(&w, &ws), TensorRef::new(&sw, &[m]), TensorRef::new(&zw, &[m]),
            TensorRef::new(&sy, &[]), TensorRef::new(&zy, &[]), Some(TensorRef::new(&bias, &[m])), &ra, &mut want,
        )
        .unwrap();
        let mut got = vec![0x55i8; y_n];
        // SAFETY: every buffer is valid for its count.
        expect_ok(unsafe {
            qk_qlinear_conv(
                x.as_ptr().cast(), QK_U8, x_shape.as_ptr(), 4, sx.as_ptr(), 1, zx.as_ptr().cast(), 1,
                w.as_ptr().cast(), QK_I8, w_shape.as_ptr(), 4, sw.as_ptr(), m, zw.as_ptr().cast(), m,
                sy.as_ptr(), 1, zy.as_ptr().cast(), 1, bias.as_ptr(), m, &ca, got.as_mut_ptr().cast(), QK_I8, y_n,
            )
        });
        assert_eq!(got, want, "QLinearConv group {group} auto_pad {auto_pad}");
        assert!(want.iter().any(|&v| v != want[0]), "a constant output would test little");

        let mut want_i = vec![0i32; y_n];
        qkern::onnx::conv_integer(TensorRef::new(&x, &xs), TensorRef::new(&w, &ws), Some(TensorRef::new(&zx, &[])), Some(TensorRef::new(&zw, &[m])), &ra, &mut want_i).unwrap();
        let mut got_i = vec![0x5555i32; y_n];
        // SAFETY: as above.
        expect_ok(unsafe {
            qk_conv_integer(x.as_ptr().cast(), QK_U8, x_shape.as_ptr(), 4, zx.as_ptr().cast(), 1, w.as_ptr().cast(), QK_I8, w_shape.as_ptr(), 4,
                zw.as_ptr().cast(), m, &ca, got_i.as_mut_ptr(), y_n)
        });
        assert_eq!(got_i, want_i, "ConvInteger group {group} auto_pad {auto_pad}");
    }
}

#[test]
fn qlinear_conv_and_conv_integer_bad_input() {
    let x = [1u8; 2 * 4 * 4];
    let w = [1i8; 3 * 2 * 3 * 3];
    let xs = [1i64, 2, 4, 4];
    let ws = [3i64, 2, 3, 3];
    let mut y = [0i32; 3 * 2 * 2];
    let attrs = no_attrs();
    // SAFETY: testing the checks; every non-NULL buffer is valid for its count.
    unsafe {
        let ci = |x: *const u8, xs: &[i64], ws: &[i64], attrs: *const qk_conv_attrs, y: &mut [i32], zw: &[i8]| {
            qk_conv_integer(x.cast(), QK_U8, xs.as_ptr(), xs.len(), null(), 0, w.as_ptr().cast(), QK_I8, ws.as_ptr(), ws.len(),
                if zw.is_empty() { null() } else { zw.as_ptr().cast() }, zw.len(), attrs, y.as_mut_ptr(), y.len())
        };
        expect_ok(ci(x.as_ptr(), &xs, &ws, &attrs, &mut y, &[]));
        assert!(y.iter().all(|&v| v == 18));
        expect_err(ci(null(), &xs, &ws, &attrs, &mut y, &[]), QK_ERR_NULL_POINTER, "qk_conv_integer", "`x`");
        expect_err(ci(x.as_ptr(), &xs, &ws, null(), &mut y, &[]), QK_ERR_NULL_POINTER, "qk_conv_integer", "`attrs`");
        expect_err(ci(x.as_ptr(), &xs, &ws, &attrs, &mut y[1..], &[]), QK_ERR_SHAPE, "qk_conv_integer", "y");
        expect_err(ci(x.as_ptr(), &xs, &[3, 1, 3, 3], &attrs, &mut y, &[]), QK_ERR_SHAPE, "qk_conv_integer", "");
        expect_err(ci(x.as_ptr(), &xs, &ws, &attrs, &mut y, &[0, 0]), QK_ERR_SHAPE, "qk_conv_integer", "w_zero_point");
        expect_err(ci(x.as_ptr(), &[1, 2, 2, 2], &ws, &attrs, &mut y, &[]), QK_ERR_INVALID_PARAMETER, "qk_conv_integer", "output size");
        expect_err(ci(x.as_ptr(), &[1, 2, -4, 4], &ws, &attrs, &mut y, &[]), QK_ERR_SHAPE, "qk_conv_integer", "negative");
        let bad_pad = qk_conv_attrs { auto_pad: 9, ..attrs };
        expect_err(ci(x.as_ptr(), &xs, &ws, &bad_pad, &mut y, &[]), QK_ERR_INVALID_PARAMETER, "qk_conv_integer", "auto_pad");
        let bad_group = qk_conv_attrs { group: 0, ..attrs };
        expect_err(ci(x.as_ptr(), &xs, &ws, &bad_group, &mut y, &[]), QK_ERR_INVALID_PARAMETER, "qk_conv_integer", "group");
        let three = qk_conv_attrs { group: 3, ..attrs };
        expect_err(ci(x.as_ptr(), &xs, &ws, &three, &mut y, &[]), QK_ERR_SHAPE, "qk_conv_integer", "group");
        let null_pads = qk_conv_attrs { pads_count: 4, ..attrs };
        expect_err(ci(x.as_ptr(), &xs, &ws, &null_pads, &mut y, &[]), QK_ERR_NULL_POINTER, "qk_conv_integer", "attrs.pads");

        let mut yq = [0u8; 12];
        let q = |sx: f32, y: *mut u8, zx_n: usize| {
            qk_qlinear_conv(x.as_ptr().cast(), QK_U8, xs.as_ptr(), 4, [sx].as_ptr(), 1, [0u8].as_ptr().cast(), zx_n,
                w.as_ptr().cast(), QK_I8, ws.as_ptr(), 4, [0.1f32].as_ptr(), 1, [0i8].as_ptr().cast(), 1,
                [1.0f32].as_ptr(), 1, [0u8].as_ptr().cast(), 1, null(), 0, &attrs, y.cast(), QK_U8, 12)
        };
        expect_ok(q(0.5, yq.as_mut_ptr(), 1));
        assert!(yq.iter().all(|&v| v == 1), "{yq:?}"); // 18 · 0.5 · 0.1 = 0.9 → 1
        expect_err(q(-1.0, yq.as_mut_ptr(), 1), QK_ERR_SCALE, "qk_qlinear_conv", "x_scale");
        expect_err(q(0.5, null_mut(), 1), QK_ERR_NULL_POINTER, "qk_qlinear_conv", "`y`");
        expect_err(q(0.5, yq.as_mut_ptr(), 0), QK_ERR_SHAPE, "qk_qlinear_conv", "x_zero_point");
        expect_err(q(0.5, x.as_ptr().cast_mut(), 1), QK_ERR_INVALID_PARAMETER, "qk_qlinear_conv", "overlap");
    }
}

// ---------------------------------------------------------------------------------------
// Codebook GEMM with requantized output

/// llama.cpp's IQ4_NL table: integer levels (an odd one among them), so the integer grid
/// is the levels themselves and each column's grid scale is its scale.
const IQ4_NL: [f32; 16] = [-127., -104., -83., -65., -49., -35., -22., -10., 1., 13., 25., 38., 53., 69., 89., 113.];

/// Codebook weights (`QK_SCHEME_CODEBOOK`, IQ4_NL, per-column scales) from explicit codes.
fn codebook_weights(codes: &[u8], k: usize, n: usize, scale: &[f32]) -> *mut qk_codebook_weights {
    let mut out = null_mut();
    // SAFETY: valid buffers with their counts; a writable out-pointer.
    let st = unsafe {
        qk_codebook_weights_create(codes.as_ptr(), codes.len(), k, n, QK_SCHEME_CODEBOOK, 4, IQ4_NL.as_ptr(), 16, scale.as_ptr(), scale.len(), &mut out)
    };
    expect_ok(st);
    out
}

/// The parameters of one `qk_codebook_gemm_requantize` call (A is u8 unless `a_i8`).
#[derive(Clone, Copy)]
struct CbRq {
    za: i32,
    sa: f32,
    so: f32,
    zo: i32,
    mode: i32,
    lo: i32,
    hi: i32,
    c_dtype: i32,
    a_i8: bool,
}

const CB_OK: CbRq = CbRq { za: 0, sa: 1.0, so: 1.0, zo: 0, mode: QK_REQUANT_FP32, lo: 0, hi: 255, c_dtype: QK_U8, a_i8: false };

#[allow(clippy::too_many_arguments)]
fn cb_rq(w: *const qk_codebook_weights, a: &[u8], m: usize, k: usize, bias: &[i32], q: &mut [u8], n: usize, p: CbRq) -> qk_status {
    let bias_ptr = if bias.is_empty() { null() } else { bias.as_ptr() };
    let a_dtype = if p.a_i8 { QK_I8 } else { QK_U8 };
    // SAFETY: valid buffers with their counts; `q` is disjoint from the inputs.
    unsafe {
        qk_codebook_gemm_requantize(
            w,
            a.as_ptr().cast(),
            a_dtype,
            a.len(),
            m,
            k,
            p.za,
            p.sa,
            bias_ptr,
            bias.len(),
            p.so,
            p.zo,
            p.mode,
            p.lo,
            p.hi,
            q.as_mut_ptr().cast(),
            p.c_dtype,
            q.len(),
            n,
        )
    }
}

/// The definition, independently: decode each code through the levels, exact i64 dot
/// product, bias, then the scalar reference requantizer with the multiplier
/// `sa·scale[n]/so` (f32 for `Fp32`, TFLite's QuantizeMultiplier in f64 otherwise).
#[allow(clippy::too_many_arguments)]
fn cb_oracle(a: &[u8], m: usize, k: usize, codes: &[u8], n: usize, scale: &[f32], bias: &[i32], p: CbRq) -> Vec<u8> {
    use qkern_kernels::reference::requant::{quantize_multiplier, requantize};
    let mode = [RequantMode::Fp32, RequantMode::TfliteDoubleRounding, RequantMode::SingleRounding][p.mode as usize];
    let av = |x: u8| if p.a_i8 { x as i8 as i64 } else { x as i64 };
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let acc: i64 = (0..k).map(|kk| (av(a[i * k + kk]) - p.za as i64) * IQ4_NL[codes[kk * n + j] as usize] as i64).sum::<i64>()
                + bias.get(j).map_or(0, |&b| b as i64);
            let qm = quantize_multiplier(p.sa as f64 * scale[j] as f64 / p.so as f64, mode);
            out.push(requantize(acc, mode, (p.sa * scale[j]) / p.so, qm, p.zo, p.lo, p.hi) as u8);
        }
    }
    out
}

#[test]
fn codebook_gemm_requantize_matches_the_definition() {
    const K: usize = 37;
    const N: usize = 5;
    const M: usize = 3;
    let codes: Vec<u8> = (0..K * N).map(|i| ((i * 7 + 3) % 16) as u8).collect();
    let scale = [0.5f32, 0.25, 0.75, 1.0, 0.125];
    let w = codebook_weights(&codes, K, N, &scale);
    // The handle decodes through exactly these levels and scales.
    let (mut table, mut gs) = ([0i8; 16], [0f32; N]);
    // SAFETY: valid, disjoint buffers with their counts.
    expect_ok(unsafe { qk_codebook_weights_table(w, table.as_mut_ptr(), 16, gs.as_mut_ptr(), N) });
    assert_eq!(table.map(|v| v as f32), IQ4_NL);
    assert_eq!(gs, scale);
    let a: Vec<u8> = (0..M * K).map(|i| (i * 89 % 256) as u8).collect();
    let bias: Vec<i32> = (0..N as i32).map(|j| j * 500 - 900).collect();
    for mode in [QK_REQUANT_FP32, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, QK_REQUANT_SINGLE_ROUNDING] {
        for (a_i8, za) in [(false, 131), (true, -5)] {
            for (c_dtype, zo, lo, hi) in [(QK_U8, 120, 0, 255), (QK_U8, 30, 30, 200), (QK_I8, -3, -128, 127), (QK_I8, 4, 4, 127)] {
                for b in [&bias[..], &[][..]] {
                    let p = CbRq { za, sa: 0.02, so: 0.9, zo, mode, lo, hi, c_dtype, a_i8 };
                    let mut q = vec![0u8; M * N];
                    expect_ok(cb_rq(w, &a, M, K, b, &mut q, N, p));
                    assert_eq!(q, cb_oracle(&a, M, K, &codes, N, &scale, b, p), "mode {mode} a_i8 {a_i8} c_dtype {c_dtype} zo {zo}");
                }
            }
        }
        // A K whose sums pass the i32 bound (the chunked i64 path): saturates, and an
        // output scale that maps the sums into range requantizes them exactly.
        let k = 70_001;
        let codes_l = vec![0u8; k * 2]; // level −127
        let wl = codebook_weights(&codes_l, k, 2, &[1.0, 0.5]);
        let al = vec![255u8; k];
        for (so, c_dtype, zo, lo, hi) in [(1.0f32, QK_U8, 100, 0, 255), (1.0, QK_I8, 0, -128, 127), (2.5e7, QK_I8, 0, -128, 127), (2.5e7, QK_U8, 128, 0, 255)] {
            let p = CbRq { za: 0, sa: 1.0, so, zo, mode, lo, hi, c_dtype, a_i8: false };
            let mut q = vec![0u8; 2];
            expect_ok(cb_rq(wl, &al, 1, k, &[], &mut q, 2, p));
            let want = cb_oracle(&al, 1, k, &codes_l, 2, &[1.0, 0.5], &[], p);
            assert_eq!(q, want, "long K mode {mode} so {so}");
        }
        // SAFETY: a live handle, freed once.
        expect_ok(unsafe { qk_codebook_weights_free(wl) });
    }
    // SAFETY: a live handle, freed once.
    expect_ok(unsafe { qk_codebook_weights_free(w) });
}

#[test]
fn codebook_gemm_requantize_bad_input() {
    const F: &str = "qk_codebook_gemm_requantize";
    const K: usize = 8;
    const N: usize = 4;
    const M: usize = 2;
    let codes: Vec<u8> = (0..K * N).map(|i| (i % 16) as u8).collect();
    let w = codebook_weights(&codes, K, N, &[0.5]);
    let a: Vec<u8> = (0..M * K).map(|i| i as u8).collect();
    let mut q = vec![0xA5u8; M * N];
    let run = |p: CbRq, bias: &[i32], q: &mut [u8]| cb_rq(w, &a, M, K, bias, q, N, p);
    expect_ok(run(CB_OK, &[], &mut q));
    q.fill(0xA5);
    let bad = |p: CbRq, want: qk_status, needle: &str| {
        let mut q = vec![0xA5u8; M * N];
        expect_err(run(p, &[], &mut q), want, F, needle);
        assert!(q.iter().all(|&v| v == 0xA5), "nothing written on failure ({needle})");
    };
    for mode in [3, -1, i32::MIN] {
        bad(CbRq { mode, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "`mode`");
    }
    for d in [0, 4242] {
        bad(CbRq { c_dtype: d, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "`c_dtype`");
    }
    bad(CbRq { c_dtype: QK_I32, ..CB_OK }, QK_ERR_UNSUPPORTED, "`c_dtype`");
    bad(CbRq { zo: 256, ..CB_OK }, QK_ERR_ZERO_POINT, "out_zero_point");
    bad(CbRq { zo: -1, ..CB_OK }, QK_ERR_ZERO_POINT, "out_zero_point");
    bad(CbRq { zo: -129, lo: -128, hi: 127, c_dtype: QK_I8, ..CB_OK }, QK_ERR_ZERO_POINT, "out_zero_point");
    bad(CbRq { za: 256, ..CB_OK }, QK_ERR_ZERO_POINT, "a_zero_point");
    bad(CbRq { za: 128, a_i8: true, ..CB_OK }, QK_ERR_ZERO_POINT, "a_zero_point");
    bad(CbRq { lo: -1, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "`out_min`");
    bad(CbRq { hi: 256, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "`out_max`");
    bad(CbRq { lo: -128, hi: 128, c_dtype: QK_I8, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "`out_max`");
    bad(CbRq { lo: 200, hi: 100, ..CB_OK }, QK_ERR_INVALID_PARAMETER, "greater than");
    for s in [0.0, -2.0, f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
        bad(CbRq { so: s, ..CB_OK }, QK_ERR_SCALE, "output scale");
        bad(CbRq { sa: s, ..CB_OK }, QK_ERR_SCALE, "activation scale");
    }
    // Multipliers beyond f32 (either way) are refused, not saturated silently.
    bad(CbRq { sa: 1e30, so: 1e-30, ..CB_OK }, QK_ERR_SCALE, "multiplier");
    bad(CbRq { sa: 1e-30, so: 1e30, ..CB_OK }, QK_ERR_SCALE, "multiplier");
    // Buffers: bias of the wrong length, NULL bias with a count, C too short, NULL C,
    // NULL weights, C overlapping A.
    expect_err(run(CB_OK, &[1, 2, 3], &mut q), QK_ERR_SHAPE, F, "bias");
    // SAFETY: NULL `bias` with a count: refused before any read.
    let st = unsafe {
        qk_codebook_gemm_requantize(w, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, 1.0, null(), 1, 1.0, 0, QK_REQUANT_FP32, 0, 255, q.as_mut_ptr().cast(), QK_U8, q.len(), N)
    };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`bias`");
    expect_err(cb_rq(w, &a, M, K, &[], &mut q[..M * N - 1], N, CB_OK), QK_ERR_BUFFER_TOO_SMALL, F, "`c`");
    // SAFETY: NULL `c`: refused before any write.
    let st = unsafe {
        qk_codebook_gemm_requantize(w, a.as_ptr().cast(), QK_U8, a.len(), M, K, 0, 1.0, null(), 0, 1.0, 0, QK_REQUANT_FP32, 0, 255, null_mut(), QK_U8, M * N, N)
    };
    expect_err(st, QK_ERR_NULL_POINTER, F, "`c`");
    expect_err(cb_rq(null(), &a, M, K, &[], &mut q, N, CB_OK), QK_ERR_NULL_POINTER, F, "`weights`");
    expect_err(cb_rq(w, &a[..M * K - 1], M, K, &[], &mut q, N, CB_OK), QK_ERR_BUFFER_TOO_SMALL, F, "`a`");
    let mut buf = a.clone();
    let p = buf.as_mut_ptr();
    // SAFETY: `a` and `c` overlap on purpose; refused before any slice is made.
    let st = unsafe { qk_codebook_gemm_requantize(w, p.cast_const().cast(), QK_U8, M * K, M, K, 0, 1.0, null(), 0, 1.0, 0, QK_REQUANT_FP32, 0, 255, p.cast(), QK_U8, M * N, N) };
    expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`c` overlaps `a`");
    assert_eq!(buf, a, "nothing written on failure");
    // SAFETY: a live handle, freed once.
    expect_ok(unsafe { qk_codebook_weights_free(w) });
}

// ---------------------------------------------------------------------------------------
// PWLQ: grid-aligned mode (a codebook handle) and bias correction, against the Rust API

mod pwlq_grid_and_bias {
    use super::*;
    use qkern::codebook::{self, CodebookWeights};
    use qkern::quant::Granularity;
    use qkern::quant::pwlq::{Breakpoint, GridScope, PwlqQuantizer};

    /// Bell-shaped weights with outliers (the tails), deterministic.
    fn weights(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|i| {
                let v: f32 = (0..4)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (s >> 8 & 0xFFFF) as f32 / 65536.0 - 0.5
                    })
                    .sum();
                v * if i % 13 == 0 { 1.5 } else { 0.5 }
            })
            .collect()
    }

    /// `qk_pwlq_quantize` (4-bit, Gaussian breakpoint): codes, m, p.
    fn quantize(w: &[f32], rows: usize, cols: usize, axis: usize) -> (Vec<i16>, Vec<f32>, Vec<f32>) {
        let nch = if axis == 1 { cols } else { rows };
        let (mut codes, mut m, mut p) = (vec![0i16; w.len()], vec![0f32; nch], vec![0f32; nch]);
        // SAFETY: valid, disjoint buffers with their lengths.
        let st = unsafe {
            qk_pwlq_quantize(w.as_ptr(), w.len(), rows, cols, axis, 4, QK_PWLQ_GAUSSIAN, codes.as_mut_ptr(), codes.len(), m.as_mut_ptr(), m.len(), p.as_mut_ptr(), p.len())
        };
        expect_ok(st);
        (codes, m, p)
    }

    /// The arguments of one `qk_pwlq_snap_to_grid` call.
    #[derive(Clone, Copy)]
    struct Snap<'a> {
        w: &'a [f32],
        rows: usize,
        cols: usize,
        axis: usize,
        bits: u32,
        m: &'a [f32],
        p: &'a [f32],
        max_level: i32,
    }

    fn snap(s: Snap<'_>, mse: *mut f64, mse_count: usize) -> (qk_status, *mut qk_codebook_weights) {
        let mut out = std::ptr::NonNull::<qk_codebook_weights>::dangling().as_ptr(); // non-NULL sentinel
        // SAFETY: the buffers are valid for their counts (or NULL on purpose); `out` is writable.
        let st = unsafe {
            qk_pwlq_snap_to_grid(s.w.as_ptr(), s.w.len(), s.rows, s.cols, s.axis, s.bits, s.m.as_ptr(), s.m.len(), s.p.as_ptr(), s.p.len(), s.max_level, mse, mse_count, &mut out)
        };
        (st, out)
    }

    #[test]
    fn pwlq_snap_to_grid_runs_on_the_codebook_entry_points_as_the_rust_api() {
        const F: &str = "qk_pwlq_snap_to_grid";
        let (k, n, m_rows) = (75usize, 6usize, 3usize);
        for axis in [1usize, 0] {
            let (rows, cols) = if axis == 1 { (k, n) } else { (n, k) };
            let w = weights(k * n, 7 + axis as u32);
            let (_, m, p) = quantize(&w, rows, cols, axis);
            let params = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(Granularity::PerChannel { axis }).calibrate(&w, &[rows, cols]).unwrap();
            for (c, ch) in params.channels().iter().enumerate() {
                assert_eq!((ch.m.to_bits(), ch.p.to_bits()), (m[c].to_bits(), p[c].to_bits()));
            }
            for max_level in [127, 64] {
                let mut mse = [f64::NAN; 2];
                let (st, h) = snap(Snap { w: &w, rows, cols, axis, bits: 4, m: &m, p: &p, max_level }, mse.as_mut_ptr(), 2);
                expect_ok(st);
                let ga = params.snap_to_grid(&w, &[rows, cols], GridScope::Shared, max_level).unwrap();
                let pc = ga.codebook_codes().unwrap();
                let cw = CodebookWeights::new(&pc).unwrap();
                assert_eq!(mse.map(f64::to_bits), [ga.mse_pwlq().to_bits(), ga.mse_grid().to_bits()]);
                let (mut hk, mut hn, mut hb) = (0usize, 0usize, 0u32);
                // SAFETY: a live handle and writable scalars.
                expect_ok(unsafe { qk_codebook_weights_shape(h, &mut hk, &mut hn, &mut hb) });
                assert_eq!((hk, hn, hb), (k, n, pc.level_set().bits()));
                let mut table = vec![0i8; 1 << hb];
                let mut gs = vec![0f32; n];
                // SAFETY: a live handle and writable buffers with their counts.
                expect_ok(unsafe { qk_codebook_weights_table(h, table.as_mut_ptr(), table.len(), gs.as_mut_ptr(), gs.len()) });
                assert_eq!(table, cw.table()[..1 << hb]);
                assert_eq!(gs.iter().map(|g| g.to_bits()).collect::<Vec<_>>(), pc.grid_scales().unwrap().iter().map(|g| g.to_bits()).collect::<Vec<_>>());
                // The GEMMs: bit for bit the Rust API on the same codes.
                let a: Vec<u8> = (0..m_rows * k).map(|i| (i * 37 % 256) as u8).collect();
                let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.5 - 1.0).collect();
                let (mut cf, mut rf) = (vec![f32::NAN; m_rows * n], vec![f32::NAN; m_rows * n]);
                // SAFETY: a live handle; valid, disjoint buffers with their counts.
                let st = unsafe {
                    qk_codebook_gemm_f32(h, a.as_ptr().cast(), QK_U8, a.len(), m_rows, k, 100, 0.02, bias.as_ptr(), n, cf.as_mut_ptr(), cf.len(), n)
                };
                expect_ok(st);
                let act = Activations::new(MatrixRef::new(&a, m_rows, k), 100u8, 0.02);
                codebook::gemm_f32(act, &cw, Some(&bias), MatrixMut::new(&mut rf, m_rows, n)).unwrap();
                assert_eq!(cf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), rf.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                let (mut ci, mut ri) = (vec![0i32; m_rows * n], vec![1i32; m_rows * n]);
                // SAFETY: as above.
                let st = unsafe { qk_codebook_gemm_i32(h, a.as_ptr().cast(), QK_U8, a.len(), m_rows, k, 100, null(), 0, ci.as_mut_ptr(), ci.len(), n) };
                expect_ok(st);
                codebook::gemm_i32(act, &cw, None, MatrixMut::new(&mut ri, m_rows, n)).unwrap();
                assert_eq!(ci, ri);
                // And the integers are Σ (a − za)·L of the grid levels (grid step 2^e).
                let step = pc.grid_scales().unwrap()[0] / ga.grid_scales()[0];
                for i in 0..m_rows {
                    for c in 0..n {
                        let acc: i64 = (0..k)
                            .map(|kk| {
                                let code = ga.codes()[if axis == 1 { kk * n + c } else { c * k + kk }];
                                (a[i * k + kk] as i64 - 100) * ga.level(c, code) as i64
                            })
                            .sum();
                        assert_eq!(ci[i * n + c] as f64 * step as f64, acc as f64);
                    }
                }
                // SAFETY: a live handle, freed once.
                expect_ok(unsafe { qk_codebook_weights_free(h) });
                // Without the MSE output.
                let (st, h) = snap(Snap { w: &w, rows, cols, axis, bits: 4, m: &m, p: &p, max_level }, null_mut(), 0);
                expect_ok(st);
                // SAFETY: a live handle, freed once.
                expect_ok(unsafe { qk_codebook_weights_free(h) });
            }
        }

        // Errors: a status, a message naming the argument, NULL in `out`, `mse` untouched.
        let w = weights(k * n, 3);
        let (_, m, p) = quantize(&w, k, n, 1);
        let ok = Snap { w: &w, rows: k, cols: n, axis: 1, bits: 4, m: &m, p: &p, max_level: 127 };
        let mut mse = [-1f64; 2];
        let bad = |s: Snap<'_>, mse: &mut [f64; 2], want: qk_status, needle: &str| {
            let (st, h) = snap(s, mse.as_mut_ptr(), 2);
            expect_err(st, want, F, needle);
            assert!(h.is_null(), "no handle on failure");
            assert_eq!(*mse, [-1.0; 2], "mse untouched on failure");
        };
        bad(Snap { w: &w[..k * n - 1], ..ok }, &mut mse, QK_ERR_SHAPE, "`w_count`");
        bad(Snap { m: &m[..n - 1], ..ok }, &mut mse, QK_ERR_SHAPE, "`m_count`");
        bad(Snap { p: &p[1..], ..ok }, &mut mse, QK_ERR_SHAPE, "`p_count`");
        bad(Snap { axis: 2, ..ok }, &mut mse, QK_ERR_INVALID_PARAMETER, "`channel_axis`");
        bad(Snap { rows: 0, ..ok }, &mut mse, QK_ERR_SHAPE, "`rows`");
        bad(Snap { max_level: 6, ..ok }, &mut mse, QK_ERR_INVALID_PARAMETER, "`max_level`");
        bad(Snap { max_level: 7 * 1024, ..ok }, &mut mse, QK_ERR_UNSUPPORTED, "max_level ≤ 127");
        bad(Snap { bits: 6, ..ok }, &mut mse, QK_ERR_UNSUPPORTED, "4-bit");
        bad(Snap { bits: 5, ..ok }, &mut mse, QK_ERR_INVALID_PARAMETER, "`bits`");
        let p_big: Vec<f32> = m.iter().map(|&v| v * 2.0).collect();
        bad(Snap { p: &p_big, ..ok }, &mut mse, QK_ERR_INVALID_PARAMETER, "breakpoint `p`");
        let mut w_nan = w.clone();
        w_nan[5] = f32::NAN;
        bad(Snap { w: &w_nan, ..ok }, &mut mse, QK_ERR_INVALID_PARAMETER, "`w` must be finite");
        let (st, h) = snap(ok, mse.as_mut_ptr(), 1);
        expect_err(st, QK_ERR_SHAPE, F, "`mse_count`");
        assert!(h.is_null());
        let (st, h) = snap(ok, null_mut(), 2);
        expect_err(st, QK_ERR_NULL_POINTER, F, "`mse`");
        assert!(h.is_null());
        // NULL inputs and a NULL out-pointer.
        let mut out = std::ptr::NonNull::<qk_codebook_weights>::dangling().as_ptr();
        // SAFETY: NULL `w` with a count: refused before any read.
        let st = unsafe { qk_pwlq_snap_to_grid(null(), k * n, k, n, 1, 4, m.as_ptr(), n, p.as_ptr(), n, 127, null_mut(), 0, &mut out) };
        expect_err(st, QK_ERR_NULL_POINTER, F, "`w`");
        assert!(out.is_null());
        // SAFETY: NULL `m` / `p`: refused before any read.
        let st = unsafe { qk_pwlq_snap_to_grid(w.as_ptr(), k * n, k, n, 1, 4, null(), n, p.as_ptr(), n, 127, null_mut(), 0, &mut out) };
        expect_err(st, QK_ERR_NULL_POINTER, F, "`m`");
        // SAFETY: as above.
        let st = unsafe { qk_pwlq_snap_to_grid(w.as_ptr(), k * n, k, n, 1, 4, m.as_ptr(), n, null(), n, 127, null_mut(), 0, &mut out) };
        expect_err(st, QK_ERR_NULL_POINTER, F, "`p`");
        // SAFETY: NULL `out`: refused before anything is written.
        let st = unsafe { qk_pwlq_snap_to_grid(w.as_ptr(), k * n, k, n, 1, 4, m.as_ptr(), n, p.as_ptr(), n, 127, null_mut(), 0, null_mut()) };
        expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
        // Per-channel snapping is the Rust API's alone: two breakpoint ratios in one
        // tensor still snap to one shared ratio here, and run.
        let p_mixed: Vec<f32> = m.iter().enumerate().map(|(c, &v)| v * [0.2, 0.8][c % 2]).collect();
        let (st, h) = snap(Snap { p: &p_mixed, ..ok }, null_mut(), 0);
        expect_ok(st);
        // SAFETY: a live handle, freed once.
        expect_ok(unsafe { qk_codebook_weights_free(h) });
    }

    fn pack(codes: &[i16], rows: usize, cols: usize, axis: usize, m: &[f32], p: &[f32]) -> *mut qk_pwlq_weights {
        let mut out = null_mut();
        // SAFETY: valid buffers with their counts, a writable out-pointer.
        expect_ok(unsafe { qk_pwlq_pack(codes.as_ptr(), codes.len(), rows, cols, axis, 4, m.as_ptr(), m.len(), p.as_ptr(), p.len(), &mut out) });
        out
    }

    fn correct(h: *const qk_pwlq_weights, w: &[f32], mean: &[f32], bias: Option<&[f32]>, out: &mut [f32]) -> qk_status {
        let (bp, bn) = bias.map_or((null(), 0), |b| (b.as_ptr(), b.len()));
        // SAFETY: valid buffers with their counts (or NULL with 0), `out` disjoint.
        unsafe { qk_pwlq_bias_correction(h, w.as_ptr(), w.len(), mean.as_ptr(), mean.len(), bp, bn, out.as_mut_ptr(), out.len()) }
    }

    #[test]
    fn pwlq_bias_correction_is_the_rust_api_bit_for_bit() {
        const F: &str = "qk_pwlq_bias_correction";
        let (k, n) = (90usize, 7usize);
        for axis in [0usize, 1] {
            let (rows, cols) = if axis == 1 { (k, n) } else { (n, k) };
            let w = weights(k * n, 11 + axis as u32);
            let (codes, m, p) = quantize(&w, rows, cols, axis);
            let h = pack(&codes, rows, cols, axis, &m, &p);
            let t = PwlqQuantizer::new(4, Breakpoint::Gaussian).with_granularity(Granularity::PerChannel { axis }).quantize(&w, &[rows, cols]).unwrap();
            assert_eq!(t.codes(), codes.as_slice());
            let mean: Vec<f32> = (0..k).map(|i| 0.25 + (i % 5) as f32 * 0.1).collect();
            let bias: Vec<f32> = (0..n).map(|c| c as f32 - 3.0).collect();
            for (mu, b) in [(&mean[..], Some(&bias[..])), (&mean[..1], None), (&mean[..], None)] {
                let mut out = vec![f32::NAN; n];
                expect_ok(correct(h, &w, mu, b, &mut out));
                let want = t.corrected_bias(&w, mu, b).unwrap();
                assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                assert!(out.iter().zip(b.unwrap_or(&[0.0; 7])).any(|(o, b)| o != b), "the correction moves the bias");
            }
            // Errors, each naming its argument.
            let mut out = vec![0f32; n];
            expect_err(correct(null(), &w, &mean, None, &mut out), QK_ERR_NULL_POINTER, F, "`weights`");
            expect_err(correct(h, &w[1..], &mean, None, &mut out), QK_ERR_SHAPE, F, "`w_count`");
            expect_err(correct(h, &w, &mean, None, &mut out[1..]), QK_ERR_SHAPE, F, "`out_count`");
            expect_err(correct(h, &w, &mean[..2], None, &mut out), QK_ERR_SHAPE, F, "input_mean");
            expect_err(correct(h, &w, &mean, Some(&bias[1..]), &mut out), QK_ERR_SHAPE, F, "bias");
            let mut nan = mean.clone();
            nan[3] = f32::NAN;
            expect_err(correct(h, &w, &nan, None, &mut out), QK_ERR_INVALID_PARAMETER, F, "input_mean");
            let mut w_inf = w.clone();
            w_inf[0] = f32::INFINITY;
            expect_err(correct(h, &w_inf, &mean, None, &mut out), QK_ERR_INVALID_PARAMETER, F, "`w` must be finite");
            // SAFETY: NULL `w` / `input_mean` / `out` with counts: refused before any access.
            let st = unsafe { qk_pwlq_bias_correction(h, null(), w.len(), mean.as_ptr(), k, null(), 0, out.as_mut_ptr(), n) };
            expect_err(st, QK_ERR_NULL_POINTER, F, "`w`");
            // SAFETY: as above.
            let st = unsafe { qk_pwlq_bias_correction(h, w.as_ptr(), w.len(), null(), k, null(), 0, out.as_mut_ptr(), n) };
            expect_err(st, QK_ERR_NULL_POINTER, F, "`input_mean`");
            // SAFETY: as above.
            let st = unsafe { qk_pwlq_bias_correction(h, w.as_ptr(), w.len(), mean.as_ptr(), k, null(), 3, out.as_mut_ptr(), n) };
            expect_err(st, QK_ERR_NULL_POINTER, F, "`bias`");
            // SAFETY: as above.
            let st = unsafe { qk_pwlq_bias_correction(h, w.as_ptr(), w.len(), mean.as_ptr(), k, null(), 0, null_mut(), n) };
            expect_err(st, QK_ERR_NULL_POINTER, F, "`out`");
            // `out` overlapping an input (the bias updated in place) is refused.
            let mut b2 = bias.clone();
            let bp = b2.as_mut_ptr();
            // SAFETY: `bias` and `out` overlap on purpose; refused before any slice is made.
            let st = unsafe { qk_pwlq_bias_correction(h, w.as_ptr(), w.len(), mean.as_ptr(), k, bp.cast_const(), n, bp, n) };
            expect_err(st, QK_ERR_INVALID_PARAMETER, F, "`out` overlaps `bias`");
            assert_eq!(b2, bias);
            // SAFETY: a live handle, freed once.
            expect_ok(unsafe { qk_pwlq_weights_free(h) });
        }
    }
}
