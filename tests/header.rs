//! `include/qkern.h` is generated from `src/ffi` by cbindgen and checked into git. This
//! test regenerates it and fails when the checked-in header is stale; with
//! `QKERN_BLESS=1` it rewrites the header instead.

use std::path::Path;

fn generate(root: &Path) -> String {
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header from src/ffi");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("include/qkern.h");
    let fresh = generate(root);
    if std::env::var_os("QKERN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write include/qkern.h");
        println!("wrote {}", path.display());
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        let line = current.lines().zip(fresh.lines()).position(|(a, b)| a != b).map_or_else(
            || format!("the files differ in length ({} vs {} lines)", current.lines().count(), fresh.lines().count()),
            |i| {
                format!(
                    "first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}",
                    i + 1,
                    current.lines().nth(i).unwrap_or(""),
                    fresh.lines().nth(i).unwrap_or("")
                )
            },
        );
        panic!("include/qkern.h is stale ({line}).\nRun `QKERN_BLESS=1 cargo test --release --test header` to update it.");
    }
}

#[test]
fn header_declares_every_entry_point() {
    // A check of the generator's output, independent of the blessed file: if cbindgen
    // silently skipped an item (an attribute it does not understand), this fails.
    let fresh = generate(Path::new(env!("CARGO_MANIFEST_DIR")));
    for needle in [
        "const char *qk_version(void);",
        "const char *qk_last_error(void);",
        "qk_status qk_quantize_multiplier(",
        "qk_status qk_multiply_by_quantized_multiplier(",
        "qk_status qk_gemm_weights_create(",
        "qk_status qk_conv_filter_create(",
        "qk_status qk_qlinear_conv(",
        "qk_status qk_conv_integer(",
        "typedef struct qk_conv_attrs {",
        "qk_status qk_conv_filter_free(",
        "qk_status qk_conv_i32(",
        "qk_status qk_conv_f32(",
        "qk_status qk_conv_requantize(",
        "typedef struct qk_conv_geometry {",
        "qk_status qk_gemm_weights_free(",
        "qk_status qk_gemm_weights_shape(",
        "qk_status qk_gemm_i32(",
        "qk_status qk_gemm_f32(",
        "qk_status qk_gemm_requantize(",
        "qk_status qk_codebook_gemm_requantize(",
        "qk_status qk_matmul_integer(",
        "qk_status qk_qlinear_matmul(",
        "qk_status qk_quantize_linear(",
        "qk_status qk_dequantize_linear(",
        "qk_status qk_dynamic_quantize_linear(",
        "qk_status qk_matmul_output_shape(",
        "typedef struct qk_gemm_weights qk_gemm_weights;",
        "typedef int32_t qk_dtype;",
        "typedef int32_t qk_requant_mode;",
        "QK_ERR_PANIC = 13",
        "#define QK_INT4 22",
        "#define QK_REQUANT_SINGLE_ROUNDING 2",
    ] {
        assert!(fresh.contains(needle), "the generated header lacks `{needle}`");
    }
}
